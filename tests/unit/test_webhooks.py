"""Webhooks: the Standard Webhooks signature (its published example), the settings' checks, which
event a status is, the outbox layout, and the deliveries of one worker against a real receiver."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from hypothesis import given, settings as hypothesis_settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from handler_sdk.protocol import Failure
from sidecar.cli.config import ConfigError, load_settings
from sidecar.invoker.background import Background
from sidecar.metrics import Metrics
from sidecar.store import Changes, InvocationRecord, Store
from sidecar.store import keys
from sidecar.store.environment import open_environment
from sidecar.store.records import WebhookMessage
from sidecar.webhooks.delivery import Webhooks
from sidecar.webhooks.messages import EVENTS, event_of, parse_events
from sidecar.webhooks.signing import parse_secret, sign

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_the_signature_is_the_one_the_standard_webhooks_spec_publishes() -> None:
    """The example of the spec's reference libraries (standard-webhooks, ``test_sign_function``)."""
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("secret, problem", [
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
    ("whsec_", "must hold 24 to 64 bytes, not 0"),
    ("whsec_!!!!", "is not base64"),
    ("whsec_" + base64.b64encode(bytes(65)).decode(), "not 65"),
])
def test_a_malformed_secret_is_refused_without_echoing_it(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        parse_secret(secret)
    assert secret.removeprefix("whsec_") not in str(refused.value) or not secret.removeprefix("whsec_")


def test_the_settings_come_from_toml_the_environment_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "sidecar.toml"
    toml.write_text('webhooks = ["http://toml/hook"]\nwebhook_events = ["paused"]\nwebhook_timeout_s = 2.5\n')
    from_file = load_settings(config_file=str(toml), environ={})
    assert (from_file.webhooks, from_file.webhook_events, from_file.webhook_timeout_s) == (
        ["http://toml/hook"], ["paused"], 2.5)
    environ = {"SIDECAR_WEBHOOKS": "http://a/x,https://b:8443/y", "SIDECAR_WEBHOOK_EVENTS": "failed,killed",
               "SIDECAR_WEBHOOK_SECRET": SECRET}
    from_env = load_settings(config_file=str(toml), environ=environ)
    assert from_env.webhooks == ["http://a/x", "https://b:8443/y"]
    assert (from_env.webhook_events, from_env.webhook_secret) == (["failed", "killed"], SECRET)
    flagged = load_settings(environ=environ, overrides={"webhooks": ["http://flag/z"]})
    assert flagged.webhooks == ["http://flag/z"] and flagged.webhook_secret == SECRET


@pytest.mark.parametrize("overrides, problem", [
    ({"webhooks": ["example.com/hook"]}, "must be http:// or https:// with a host"),
    ({"webhooks": ["http://ok/hook", "mailto:me@example.com"]}, "'mailto:me@example.com' must be http"),
    ({"webhook_events": ["completed", "started"]}, "unknown webhook event 'started': choose from completed"),
    ({"webhook_secret": "whsec_abc"}, "webhook secret"),
    ({"webhook_timeout_s": 0}, "webhook_timeout_s must be more than 0"),
    ({"webhook_timeout_s": float("nan")}, "webhook_timeout_s must be more than 0"),
])
def test_bad_settings_are_refused_with_what_is_wrong(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match="invalid setting: .*" + problem.replace("(", r"\(")):
        load_settings(environ={}, overrides=overrides)


@hypothesis_settings(max_examples=300, deadline=None)
@given(urls=st.lists(st.text(max_size=40), max_size=3), events=st.lists(st.text(max_size=20), max_size=3),
       secret=st.none() | st.text(max_size=80) | st.binary(max_size=70).map(
           lambda b: "whsec_" + base64.b64encode(b).decode()))
def test_any_webhook_settings_load_or_are_refused_with_a_config_error(
    urls: list[str], events: list[str], secret: str | None,
) -> None:
    try:
        settings = load_settings(environ={}, overrides={"webhooks": urls, "webhook_events": events,
                                                        "webhook_secret": secret})
    except ConfigError as exc:
        assert str(exc).startswith("invalid setting:") and "\n" not in str(exc)[:200]
        return
    assert parse_events(settings.webhook_events) <= set(EVENTS)
    if settings.webhook_secret is not None:
        assert 24 <= len(parse_secret(settings.webhook_secret)) <= 64


def _record(status: str, **fields: Any) -> InvocationRecord:
    return InvocationRecord(id="inv_1", service="Agents", handler="run", key="k", handler_kind="exclusive",
                            status=status, deployment_id="dp_1", created_ms=1, modified_ms=1, **fields)


@pytest.mark.parametrize("record, event", [
    (_record("completed"), "completed"),
    (_record("failed", failure=Failure(422, "refused")), "failed"),
    (_record("failed", failure=Failure(402, "payment required by the vendor")), "failed"),
    (_record("failed", failure=Failure(402, "budget exceeded: spent 2.00 of 2.00")), "budget_exceeded"),
    (_record("paused", last_error="boom"), "paused"),
    (_record("paused", pause_reason="paused by an operator"), "paused"),
    (_record("paused", pause_reason="budget exceeded: spent 1.00 of 1.00"), "budget_exceeded"),
    (_record("killed", failure=Failure(409, "invocation killed")), "killed"),
    (_record("cancelled", failure=Failure(409, "invocation cancelled")), "cancelled"),
    (_record("suspended"), None), (_record("backing-off"), None), (_record("pending"), None),
])
def test_each_status_is_one_event_or_none(record: InvocationRecord, event: str | None) -> None:
    assert event_of(record) == event


def test_events_are_named_with_or_without_their_prefix_and_none_means_all() -> None:
    assert parse_events(["invocation.paused", " failed "]) == {"paused", "failed"}
    assert parse_events([]) == parse_events([""]) == set(EVENTS)


def test_a_layout_5_directory_opens_as_the_current_layout_with_an_empty_outbox(tmp_path: Path) -> None:
    env, dbs = open_environment(tmp_path, durability="none", map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"5", db=dbs["meta"])
    env.close()
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    assert store._get("meta", b"format") == b"7"
    assert store.webhook_tags() == [] and store.last_webhook_seq(keys.webhook_tag("http://x/")) == 0


# --- deliveries against a real receiver --------------------------------------------------------


class Receiver:
    """An HTTP receiver that answers 500 to the first ``failures`` requests, then 204, and keeps
    the order in which it took (2xx) each message."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tries: Counter[str] = Counter()
        self.taken: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        message_id = request.headers["webhook-id"]
        self.tries[message_id] += 1
        if sum(self.tries.values()) <= self.failures:
            return web.Response(status=500)
        body = msgspec.json.decode(await request.read())
        self.taken.append((body["invocation_id"], message_id))
        return web.Response(status=204)


def _file(changes: Changes, url: str, seq: int, invocation_id: str, n: int) -> str:
    message_id = f"msg_{invocation_id}_{n}"
    body = msgspec.json.encode({"invocation_id": invocation_id, "n": n})
    changes.put_webhook(keys.webhook_key(keys.webhook_tag(url), seq, invocation_id),
                        WebhookMessage(id=message_id, body=body))
    return message_id


async def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_worker_delivers_its_own_messages_in_order_per_invocation_through_failures(
    tmp_path: Path, aiohttp_server: Any,
) -> None:
    receiver = Receiver(failures=5)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    url = str(server.make_url("/hook"))
    store = Store(tmp_path, durability="none", map_size=1 << 26)
    await store.start()
    now_us = time.time_ns() // 1000
    changes = Changes()
    expected: dict[str, list[str]] = {}
    seq = now_us
    for n in range(4):  # interleaved: 3 invocations of ours, 1 of another worker's
        for invocation_id in ("inv_a", "inv_b", "inv_c", "inv_theirs"):
            seq += 1
            expected.setdefault(invocation_id, []).append(_file(changes, url, seq, invocation_id, n))
    stale = _file(changes, url, now_us - 120_000_000, "inv_old", 0)  # filed past the retention (60 s)
    gone = "http://no-longer-configured/hook"
    _file(changes, gone, now_us, "inv_a", 9)
    await store.submit(changes)

    settings = load_settings(environ={}, overrides={"webhooks": [url], "retention_s": 60})
    background, metrics = Background(), Metrics()
    webhooks = Webhooks(settings=settings, store=store, owns=lambda i: i != "inv_theirs", metrics=metrics,
                        spawn=background.spawn)
    webhooks.start()
    try:
        def ours_delivered() -> bool:
            left = store.webhook_keys(keys.webhook_tag(url), None, 100)
            return len(receiver.taken) == 12 and len(left) == 4 and all(k.endswith(b"inv_theirs") for k in left)
        await _until(ours_delivered)
        for invocation_id in ("inv_a", "inv_b", "inv_c"):
            assert [m for i, m in receiver.taken if i == invocation_id] == expected[invocation_id]
        assert stale not in receiver.tries and "inv_theirs" not in {i for i, _ in receiver.taken}
        assert store.webhook_tags() == [keys.webhook_tag(url)]  # the unconfigured receiver's were dropped
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples}
        for outcome, count in (("delivered", 12), ("failed", 5), ("expired", 1)):
            assert samples["sidecar_webhook_deliveries_total", (("outcome", outcome), ("receiver", url))] == count
        assert samples["sidecar_webhook_deliveries_total", (("outcome", "dropped"), ("receiver", "(not configured)"))] == 1
        assert samples["sidecar_webhook_backlog", (("receiver", url),)] == 0

        for n in range(4, 7):  # caught up: what is filed now is handed over as its batch commits
            later = Changes()
            seq += 1
            expected["inv_a"].append(_file(later, url, seq, "inv_a", n))
            await store.submit(later)
            (raw_key, value), = ((op.key, op.value) for op in later.ops)
            webhooks.filed([raw_key], msgspec.msgpack.decode(value, type=WebhookMessage))
        await _until(lambda: len(receiver.taken) == 15)
        assert [m for i, m in receiver.taken if i == "inv_a"] == expected["inv_a"]
    finally:
        await background.close()
        await webhooks.close()
        await store.close()


def _deliver_once(answer: bytes) -> str | None:
    """One delivery to a receiver that reads the request and answers ``answer`` (raw bytes)."""
    async def go() -> str | None:
        async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(take, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        settings = load_settings(environ={}, overrides={"webhooks": [url], "webhook_timeout_s": 2})
        webhooks = Webhooks(settings=settings, store=None, owns=lambda _: True,  # type: ignore[arg-type]
                            metrics=Metrics(), spawn=lambda _: None)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                return await webhooks.receivers[0]._post(session, WebhookMessage(id="msg_1", body=b"{}"))
        finally:
            server.close()
            await server.wait_closed()
    return asyncio.run(go())


_STATUS_LINES = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 302 Found",
                                 b"HTTP/1.1 500 Oops", b"HTTP/1.1 999 What", b"HTTP/1.0 200 OK", b"HTTP/9.9 200 OK"])


@hypothesis_settings(max_examples=60, deadline=None)
@given(answer=st.binary(max_size=200) | st.tuples(_STATUS_LINES, st.binary(max_size=100)).map(
    lambda parts: parts[0] + b"\r\n" + parts[1]))
def test_whatever_a_receiver_answers_is_a_delivery_or_a_failure_never_an_error(answer: bytes) -> None:
    outcome = _deliver_once(answer)
    assert outcome is None or isinstance(outcome, str)
    if outcome is None:
        assert answer.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2"))
