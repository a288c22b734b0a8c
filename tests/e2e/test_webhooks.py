"""Webhooks seen by a real receiver: signed per Standard Webhooks, one per final or paused status,
in order per invocation, delivered after the receiver was down and after a SIGKILL, and never in
the way of invocations when a receiver hangs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import START_TIMEOUT_S, Cluster, running_cluster
from tests.procs import Process, eventually, free_port, python, sidecar_cli

SECRET_BYTES = secrets.token_bytes(32)
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
HANDLERS = "tests.e2e.webhooked:SERVICES"


def verified(delivery: dict[str, str], *, signed: bool = True) -> dict[str, Any]:
    """The body of a delivery whose signature checks out, as a receiver checks it (the spec's
    recipe, written here apart from the sidecar's code); ``signed=False``: one that has none."""
    if signed:
        content = f"{delivery['id']}.{delivery['timestamp']}.{delivery['body']}".encode()
        expected = base64.b64encode(hmac.new(SECRET_BYTES, content, hashlib.sha256).digest()).decode()
        versions = dict(part.split(",", 1) for part in delivery["signature"].split())
        assert hmac.compare_digest(versions["v1"], expected), delivery
    else:
        assert delivery["signature"] == ""
    assert abs(int(delivery["timestamp"]) - time.time()) < 300  # fresh: a receiver refuses stale ones
    assert delivery["content_type"] == "application/json"
    body: dict[str, Any] = json.loads(delivery["body"])
    return body


async def received(http: aiohttp.ClientSession, receiver: str) -> list[dict[str, str]]:
    async with http.get(f"{receiver}/webhooks") as response:
        deliveries: list[dict[str, str]] = await response.json()
        return deliveries


async def until_received(http: aiohttp.ClientSession, receiver: str, count: int, timeout: float = 30.0,
                         signed: bool = True) -> list[dict[str, Any]]:
    """The verified bodies once the receiver has ``count`` distinct messages (by ``webhook-id``)."""
    async def enough() -> list[dict[str, str]]:
        deliveries = await received(http, receiver)
        return deliveries if len({d["id"] for d in deliveries}) >= count else []
    deliveries = await eventually(enough, timeout=timeout, what=f"{count} webhooks at {receiver}")
    return [verified(d, signed=signed) for d in deliveries]


async def metric(cluster: Cluster, name: str) -> float:
    async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def finished(cluster: Cluster, invocation_id: str, status: str) -> bool:
    _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
    return bool(shown["status"] == status)


async def send(cluster: Cluster, path: str, body: Any) -> str:
    status, answer, _ = await cluster.post(f"{path}/send", body)
    assert status == 202, answer
    return str(answer["invocationId"])


async def test_each_end_and_pause_is_told_signed_and_in_order(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    flags = ["--durability", "none", "--workers", "2", "--webhook-secret", SECRET]
    sink = free_port()  # the cluster's sink, named before it starts
    async with running_cluster(tmp_path, http, request, [*flags, "--webhook", f"http://127.0.0.1:{sink}/webhook"],
                               handlers=HANDLERS, sink_port=sink) as cluster:
        status, _, headers = await cluster.post("/Tools/quote", 0.75)
        assert status == 200
        completed = headers["x-restate-id"]
        status, _, headers = await cluster.post("/Steps/refuse", "no stock")
        assert status == 422
        failed = headers["x-restate-id"]
        crashy = await send(cluster, "/Steps/crashy", "wh")  # paused after 3 attempts, then killed
        careful = await send(cluster, "/Agents/eve/careful", 3)  # paused for its budget, then resumed
        await eventually(lambda: finished(cluster, crashy, "paused"), what="crashy paused")
        await eventually(lambda: finished(cluster, careful, "paused"), what="careful paused")
        assert (await cluster.admin_call("POST", f"/invocations/{crashy}/kill"))[0] == 202
        assert (await cluster.admin_call("POST", f"/invocations/{careful}/resume", {"budget": 5}))[0] in (200, 202)

        bodies = await until_received(http, cluster.sink_url, 6)
        by_invocation: dict[str, list[str]] = {}
        for body in bodies:
            by_invocation.setdefault(body["invocation_id"], []).append(body["type"])
        assert by_invocation == {
            completed: ["invocation.completed"], failed: ["invocation.failed"],
            crashy: ["invocation.paused", "invocation.killed"],
            careful: ["invocation.budget_exceeded", "invocation.completed"],
        }
        first = {(b["invocation_id"], b["type"]): b for b in bodies}
        quote = first[completed, "invocation.completed"]
        assert quote == {"type": "invocation.completed", "invocation_id": completed, "target": "Tools/quote",
                         "status": "completed", "reason": None, "cost": 0.75, "at_ms": quote["at_ms"]}
        assert abs(quote["at_ms"] - time.time() * 1000) < 60_000
        assert first[failed, "invocation.failed"]["reason"] == "refused: no stock"
        paused = first[crashy, "invocation.paused"]
        assert paused["status"] == "paused" and "bug in handler code" in paused["reason"]
        assert first[crashy, "invocation.killed"]["status"] == "killed"
        spent = first[careful, "invocation.budget_exceeded"]
        assert spent["status"] == "paused" and spent["reason"].startswith("budget exceeded: spent")
        assert spent["target"] == "Agents/eve/careful" and spent["cost"] == 1.0
        assert first[careful, "invocation.completed"]["cost"] == 1.5
        deliveries = await received(http, cluster.sink_url)
        assert len({d["id"] for d in deliveries}) == 6
        assert all(re.fullmatch(r"msg_[0-9a-f]{24}", d["id"]) for d in deliveries)
        await eventually(lambda: _zero(metric(cluster, "sidecar_webhook_backlog")), what="an empty backlog")
        assert await metric(cluster, "sidecar_webhook_deliveries_total") >= 6


async def _zero(value: Any) -> bool:
    return await value == 0


async def test_only_the_events_asked_for_are_sent(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    sink = free_port()
    flags = ["--durability", "none", "--workers", "1", "--webhook", f"http://127.0.0.1:{sink}/webhook",
             "--webhook-events", "failed,invocation.killed"]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS, sink_port=sink) as cluster:
        assert (await cluster.post("/Counter/a/add", 1))[0] == 200
        status, _, headers = await cluster.post("/Steps/refuse", "no")
        assert status == 422
        bodies = await until_received(http, cluster.sink_url, 1, signed=False)  # no secret: not signed
        assert [(b["type"], b["invocation_id"]) for b in bodies] == [("invocation.failed", headers["x-restate-id"])]


@pytest.mark.timeout(180)
async def test_messages_wait_for_a_receiver_that_is_down_across_a_sigkill(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    """Nothing is delivered while the receiver is down; the sidecar is SIGKILLed; after the restart,
    the receiver comes up and gets every message, each with the ID it was filed with."""
    port = free_port()
    receiver = Process("receiver", python("-m", "tests.e2e.sink", "--port", str(port)), tmp_path)
    flags = ["--workers", "2", "--webhook-secret", SECRET, "--webhook", f"http://127.0.0.1:{port}/webhook"]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS) as cluster:
        # k0 to k11: keys of both workers' partitions (k4 to k7 are worker 0's, which answers GET /webhooks)
        ids = [(await cluster.post(f"/Counter/k{i}/add", i))[2]["x-restate-id"] for i in range(12)]
        await eventually(lambda: _equal(metric(cluster, "sidecar_webhook_backlog"), 12), what="a backlog of 12")
        assert await metric(cluster, "sidecar_webhook_deliveries_total") > 0  # tried, failed
        status, shown = await cluster.get("/webhooks", admin=True)
        (view,) = shown["receivers"]
        assert status == 200 and view["receiver"] == f"http://127.0.0.1:{port}/webhook" and view["backlog"] == 12
        assert "ClientConnectorError" in view["last_error"] and abs(view["oldest_ms"] - time.time() * 1000) < 60_000
        cluster.sidecar.kill()
        await cluster.start_sidecar()
        assert await metric(cluster, "sidecar_webhook_backlog") == 12  # counted from the store
        receiver.start()
        try:
            await eventually(lambda: cluster._ok(f"http://127.0.0.1:{port}/webhooks"), timeout=START_TIMEOUT_S,
                             what="the receiver")
            bodies = await until_received(http, f"http://127.0.0.1:{port}", 12, timeout=60)
            assert sorted({b["invocation_id"] for b in bodies}) == sorted(ids)
            assert {b["type"] for b in bodies} == {"invocation.completed"}
            await eventually(lambda: _zero(metric(cluster, "sidecar_webhook_backlog")), what="an empty backlog")
            _, shown = await cluster.get("/webhooks", admin=True)
            assert shown["receivers"][0]["backlog"] == 0 and shown["receivers"][0]["oldest_ms"] is None
        finally:
            receiver.stop()


@pytest.mark.timeout(180)
async def test_a_sigkill_during_deliveries_loses_none_and_repeats_keep_their_id(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    """A receiver that takes 0.5 s per message; the sidecar is SIGKILLed while some are on their
    way (taken by the receiver, not yet acknowledged to the sidecar, or not yet deleted). After the
    restart every invocation's message arrives, and those sent twice carry the same ID."""
    sink = free_port()
    flags = ["--workers", "1", "--webhook-secret", SECRET, "--webhook", f"http://127.0.0.1:{sink}/webhook?slow=0.5"]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS, sink_port=sink) as cluster:
        ids = await asyncio.gather(*(send(cluster, f"/Counter/c{i}/add", 1) for i in range(40)))
        await eventually(lambda: _delivered_some(http, cluster.sink_url), what="the first deliveries")
        cluster.sidecar.kill()
        before = {d["id"] for d in await received(http, cluster.sink_url)}
        await cluster.start_sidecar()
        bodies = await until_received(http, cluster.sink_url, 40, timeout=90)
        assert sorted(b["invocation_id"] for b in {b["invocation_id"]: b for b in bodies}.values()) == sorted(ids)
        deliveries = await received(http, cluster.sink_url)
        assert len({d["id"] for d in deliveries}) == 40  # a repeat carries its first ID
        assert len(deliveries) > 40  # at least once: what was on its way at the kill came again
        assert before < {d["id"] for d in deliveries}


async def _delivered_some(http: aiohttp.ClientSession, receiver: str) -> bool:
    return 0 < len(await received(http, receiver)) < 40


async def _equal(value: Any, expected: float) -> bool:
    return await value == expected


@pytest.fixture
async def hanging() -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver that takes each connection and never answers: its URL, and the ``webhook-id`` of
    every request it read (a repeat is a retry)."""
    seen: list[str] = []
    held: list[asyncio.StreamWriter] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?im)^webhook-id: *(\S+)", head)
        if found:
            seen.append(found.group(1).decode())

    server = await asyncio.start_server(take, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/webhook", seen
    finally:
        for writer in held:
            writer.close()
        server.close()


@pytest.mark.timeout(120)
async def test_a_receiver_that_never_answers_holds_up_nothing(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, hanging: tuple[str, list[str]],
) -> None:
    hang_url, seen = hanging
    sink = free_port()
    config = tmp_path / "sidecar.toml"
    config.write_text(f'webhooks = ["{hang_url}", "http://127.0.0.1:{sink}/webhook"]\nwebhook_timeout_s = 3.0\n'
                      f'webhook_secret = "{SECRET}"\n')
    flags = ["--durability", "none", "--workers", "1", "--config", str(config)]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS, sink_port=sink) as cluster:
        slowest = 0.0
        for i in range(40):  # more messages than the hanging receiver takes connections
            started = time.monotonic()
            assert (await cluster.post("/Counter/h/add", 1))[:2] == (200, i + 1)
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.5, f"a call took {slowest:.2f} s: it waited for a webhook (timeout 3 s)"
        bodies = await until_received(http, cluster.sink_url, 40, timeout=30)  # the other receiver gets all
        assert len({b["invocation_id"] for b in bodies}) == 40

        async def retried() -> bool:
            return len(seen) > len(set(seen))
        await eventually(retried, timeout=30, what="a request the hanging receiver read twice")
        assert await metric(cluster, "sidecar_webhook_backlog") > 0  # the hanging receiver's


@pytest.mark.parametrize("flags, message", [
    (["--webhook", "ftp://example.com/hook"], "webhook URL 'ftp://example.com/hook' must be http:// or https://"),
    (["--webhook", "http:///nohost"], "must be http:// or https:// with a host"),
    (["--webhook", "http://x/h", "--webhook-events", "paused,exploded"], "unknown webhook event 'exploded'"),
    (["--webhook", "http://x/h", "--webhook-secret", "secret"], "webhook secret must start with 'whsec_'"),
    (["--webhook", "http://x/h", "--webhook-secret", "whsec_not*base64"], "is not base64"),
    (["--webhook", "http://x/h", "--webhook-secret", "whsec_" + base64.b64encode(b"short").decode()],
     "must hold 24 to 64 bytes, not 5"),
])
async def test_bad_webhook_settings_stop_the_start_with_one_line(
    tmp_path: Path, flags: list[str], message: str,
) -> None:
    result = await asyncio.to_thread(
        subprocess.run, sidecar_cli("serve", "--data-dir", str(tmp_path), *flags),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data.mdb").exists()  # refused before anything was opened
