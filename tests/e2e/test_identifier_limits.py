"""Identifiers up to the limit all work, whatever the store's own key limits; longer ones are
refused with 400 before anything is written, and nothing a client or a handler sends stops the
sidecar (DESIGN §3)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from handler_sdk.protocol import MAX_IDENTIFIER_BYTES as LIMIT
from tests.e2e.conftest import Cluster
from tests.procs import eventually

#: Past LMDB's 511-byte keys, up to the limit, and multi-byte characters right at it.
LONG = ["k" * 511, "k" * 600, "k" * LIMIT, "é" * (LIMIT // 2)]
TOO_LONG = ["k" * (LIMIT + 1), "é" * (LIMIT // 2 + 1)]


async def _invocation_count(cluster: Cluster) -> int:
    _, listed = await cluster.get("/invocations?limit=1000", admin=True)
    return len(listed["invocations"])


async def _state(cluster: Cluster, service: str, key: str) -> dict[str, Any]:
    status, body = await cluster.get(f"/state/{service}/{quote(key, safe='')}", admin=True)
    assert status == 200, body
    return body["state"]


def _refused(status: int, body: Any, what: str) -> bool:
    return status == 400 and what in body["message"] and str(LIMIT) in body["message"]


async def _still_serving(cluster: Cluster) -> None:
    status, before, _ = await cluster.post("/Counter/alive/add", 1)
    assert status == 200
    assert (await cluster.post("/Counter/alive/add", 1))[:2] == (200, before + 1)


async def test_object_keys_up_to_the_limit_work_and_longer_ones_are_400(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    for key in LONG:
        path = f"/Counter/{quote(key)}/add"
        assert (await cluster.post(path, 1))[:2] == (200, 1), len(key)
        assert (await cluster.post(path, 2))[:2] == (200, 3), len(key)
        assert await _state(cluster, "Counter", key) == {"count": 3}
    key = "w" * LIMIT  # a workflow's run, promise and result under a key at the limit
    assert (await cluster.post(f"/Signup/{key}/run/send", "a@b.c"))[0] == 202
    assert (await cluster.post(f"/Signup/{key}/approve", "yes"))[:2] == (200, "recorded")
    assert await cluster.get(f"/restate/workflow/Signup/{key}/attach") == (200, "a@b.c: yes")
    before = await _invocation_count(cluster)
    status, body, _ = await cluster.post(f"/restate/awakeables/awk_{'a' * LIMIT}/resolve", 1)
    assert _refused(status, body, "awakeable ID"), body
    for key in TOO_LONG:
        for path in (f"/Counter/{quote(key)}/add", f"/Counter/{quote(key)}/add/send"):
            status, body, _ = await cluster.post(path, 1)
            assert _refused(status, body, "object key"), (path[:20], status, body)
        status, body = await cluster.get(f"/restate/workflow/Signup/{quote(key)}/output")
        assert _refused(status, body, "key"), body
        status, body = await cluster.get(f"/state/Counter/{quote(key)}", admin=True)
        assert _refused(status, body, "key"), body
    assert await _invocation_count(cluster) == before
    await _still_serving(cluster)


async def test_idempotency_keys_up_to_the_limit_name_one_invocation(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    for idem in ["i" * 600, "i" * LIMIT]:
        headers = {"idempotency-key": idem}
        status, first, first_headers = await cluster.post("/Counter/idem/add", 1, headers=headers)
        assert status == 200
        status, again, again_headers = await cluster.post("/Counter/idem/add", 1, headers=headers)
        assert (status, again) == (200, first)
        assert again_headers["x-restate-id"] == first_headers["x-restate-id"]
        assert await cluster.get(f"/restate/invocation/Counter/idem/add/{quote(idem, safe='')}/output") == (200, first)
        # A keyless service's idempotency key picks its partition: repeats must meet there.
        order = {"item": "pen", "quantity": 2}
        ids = {(await cluster.post("/Steps/typed", order, headers=headers))[2]["x-restate-id"] for _ in range(2)}
        assert len(ids) == 1
    assert await _state(cluster, "Counter", "idem") == {"count": 2}
    before = await _invocation_count(cluster)
    too_long = "i" * (LIMIT + 1)
    status, body, _ = await cluster.post("/Counter/idem/add", 1, headers={"idempotency-key": too_long})
    assert _refused(status, body, "idempotency key"), body
    status, body = await cluster.get(f"/restate/invocation/Counter/idem/add/{too_long}/attach")
    assert _refused(status, body, "idempotency key"), body
    assert await _invocation_count(cluster) == before
    await _still_serving(cluster)


async def test_state_names_up_to_the_limit_set_by_handlers_and_operators(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    names = ["s" * 600, "s" * LIMIT, "é" * (LIMIT // 2)]
    for name in names:
        assert (await cluster.post("/Names/n/remember", name))[:2] == (200, len(name.encode()))
        assert (await cluster.post("/Names/n/recall", name))[:2] == (200, len(name.encode()))
    assert await _state(cluster, "Names", "n") == {name: len(name.encode()) for name in names}
    by_operator = "o" * 700
    status, _ = await cluster.admin_call("PUT", f"/state/Names/n/{by_operator}", 7)
    assert status == 200
    assert (await _state(cluster, "Names", "n"))[by_operator] == 7
    assert (await cluster.post("/Names/n/recall", by_operator))[:2] == (200, 7)
    assert (await cluster.admin_call("DELETE", f"/state/Names/n/{by_operator}"))[0] == 200
    assert by_operator not in await _state(cluster, "Names", "n")

    too_long = "s" * (LIMIT + 1)
    status, body, _ = await cluster.post("/Names/n/remember", too_long)
    assert _refused(status, body, "state name"), body  # the handler's ctx.set refused it
    for method in ("PUT", "DELETE"):
        status, body = await cluster.admin_call(method, f"/state/Names/n/{too_long}", 1)
        assert _refused(status, body, "state name"), body
    assert await _state(cluster, "Names", "n") == {name: len(name.encode()) for name in names}
    await _still_serving(cluster)


async def test_calls_and_sends_reach_long_keys(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    key = "t" * 1000
    assert (await cluster.post("/Names/a/send_add", key))[:2] == (200, "sent")

    async def sent() -> bool:
        return await _state(cluster, "Counter", key) == {"count": 1}

    await eventually(sent, what="the send to a 1,000-byte key to run")
    assert (await cluster.post("/Names/a/call_add", key))[:2] == (200, 2)
    for handler in ("send_add", "call_add"):
        status, body, _ = await cluster.post(f"/Names/a/{handler}", "t" * (LIMIT + 1))
        assert _refused(status, body, "key"), body
    await _still_serving(cluster)


async def test_a_handler_that_sends_identifiers_over_the_limit_fails_its_attempts(durable_cluster: Cluster) -> None:
    """Past the SDK's checks, the sidecar refuses the frame: the attempt fails with the reason,
    the invocation pauses after its retries, and the sidecar goes on serving, restarts included."""
    cluster = durable_cluster
    forged = {}
    for what in ("state", "send", "promise"):
        status, body, _ = await cluster.post(f"/Names/rogue-{what}/forge/send", what)
        assert status == 202, body
        forged[what] = body["invocationId"]

    async def paused(invocation_id: str) -> dict[str, Any]:
        _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
        return shown if shown["status"] == "paused" else {}

    for what, invocation_id in forged.items():
        shown = await eventually(lambda: paused(invocation_id), what=f"the forged {what} invocation to pause")
        assert "protocol violation" in shown["last_error"] and str(LIMIT) in shown["last_error"], shown
    await _still_serving(cluster)
    cluster.sidecar.kill()
    await cluster.start_sidecar()
    await _still_serving(cluster)
    for invocation_id in forged.values():
        assert await paused(invocation_id)
    assert await _state(cluster, "Names", "rogue-state") == {}
    assert "a write failed" not in cluster.sidecar.log()
