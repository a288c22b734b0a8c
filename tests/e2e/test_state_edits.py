"""An operator's state edits take their key's turn: never lost under a running exclusive handler."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from sidecar.process.partitions import DEFAULT_PARTITIONS, PartitionMap
from tests.e2e.conftest import Cluster
from tests.e2e.rawhttp import request_bytes
from tests.procs import eventually


def _key_of_worker_1(prefix: str) -> str:
    """A key that, with two workers, the worker not serving the admin API owns."""
    two = PartitionMap(partitions=DEFAULT_PARTITIONS, workers=2, index=0)
    return next(k for k in (f"{prefix}{i}" for i in range(1000)) if two.owner(two.of_key("Counter", k)) == 1)


async def _edit(cluster: Cluster, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    async with cluster.http.request(method, f"http://{cluster.admin}{path}", json=body) as response:
        return response.status, await response.json(), dict(response.headers)


async def _count(cluster: Cluster, key: str) -> Any:
    status, body = await cluster.get(f"/state/Counter/{key}", admin=True)
    assert status == 200, body
    return body["state"].get("count")


async def _edits_waiting(cluster: Cluster) -> float:
    async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
        lines = (await response.text()).splitlines()
    return sum(float(line.split()[1]) for line in lines if line.startswith("sidecar_state_edits_waiting "))


async def _holding(cluster: Cluster, key: str, name: str) -> tuple[str, str]:
    """Start an exclusive invocation on ``key`` that has read its count and now waits, holding the
    key, on an awakeable: its ID and the awakeable's."""
    status, body, _ = await cluster.post(f"/Counter/{key}/bump_when_approved/send", name)
    assert status == 202, body

    async def published() -> str:
        async with cluster.http.get(f"{cluster.sink_url}/notes/{name}") as response:
            return await response.json() if response.status == 200 else ""

    return body["invocationId"], await eventually(published, what="the invocation to read the state and wait")


async def _approve(cluster: Cluster, awakeable_id: str) -> None:
    status, body, _ = await cluster.post(f"/restate/awakeables/{awakeable_id}/resolve", "go")
    assert status == 202, body


async def test_an_edit_waits_for_the_invocation_holding_the_key_and_is_not_lost(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    key = _key_of_worker_1("edit")
    status, at_once, _ = await _edit(cluster, "PUT", f"/state/Counter/{key}/count", 10)  # an idle key
    assert status == 200, at_once
    assert await _count(cluster, key) == 10
    invocation_id, awakeable_id = await _holding(cluster, key, f"edit-{key}")

    put = asyncio.ensure_future(_edit(cluster, "PUT", f"/state/Counter/{key}/count?wait=60s", 100))
    await eventually(lambda: _waiting_or_done(cluster, put), what="the edit to wait in the key's line")
    await _approve(cluster, awakeable_id)
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, 11)  # it read 10
    status, applied, _ = await put
    assert status == 200, applied
    assert await _count(cluster, key) == 100  # the edit, not overwritten by the invocation's 11
    assert (await cluster.post(f"/Counter/{key}/add", 1))[:2] == (200, 101)  # the next one sees it
    _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
    assert applied["waited_for"] == invocation_id and applied["applied_at"] >= shown["completed_at"], applied
    assert at_once["waited_for"] is None and at_once["applied_at"] < shown["created_at"], at_once
    assert await _edits_waiting(cluster) == 0


async def _waiting_or_done(cluster: Cluster, put: asyncio.Future[Any]) -> bool:
    return put.done() or await _edits_waiting(cluster) == 1


async def test_an_edit_that_cannot_wait_long_enough_is_refused_and_changes_nothing(
    durable_cluster: Cluster,
) -> None:
    cluster = durable_cluster
    key = _key_of_worker_1("busy")
    invocation_id, awakeable_id = await _holding(cluster, key, f"busy-{key}")
    for method, body in (("PUT", 5), ("DELETE", None)):
        status, error, headers = await _edit(cluster, method, f"/state/Counter/{key}/count?wait=0s", body)
        assert status == 409, error
        assert invocation_id in error["message"] and "Retry-After" in headers, (error, headers)
    assert await _count(cluster, key) is None
    await _approve(cluster, awakeable_id)
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, 1)
    assert await _count(cluster, key) == 1
    assert await _edits_waiting(cluster) == 0
    status, cleared, _ = await _edit(cluster, "DELETE", f"/state/Counter/{key}/count?wait=0s")
    assert status == 200 and cleared["cleared"] and cleared["applied_at"], cleared  # free now: no wait needed
    assert await _count(cluster, key) is None


async def test_an_edit_whose_client_hung_up_while_it_waited_is_never_applied(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    key = _key_of_worker_1("gone")
    invocation_id, awakeable_id = await _holding(cluster, key, f"gone-{key}")
    host, port = cluster.admin.rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(request_bytes("PUT", f"/state/Counter/{key}/count?wait=60s".encode(),
                               [(b"content-type", b"application/json")], b"100"))
    await writer.drain()

    async def waiting(count: int) -> bool:
        return await _edits_waiting(cluster) == count

    await eventually(lambda: waiting(1), what="the edit to wait in the key's line")
    writer.close()  # the operator gave up (Ctrl-C)
    await eventually(lambda: waiting(0), what="the abandoned edit to leave the line")
    await _approve(cluster, awakeable_id)
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, 1)
    assert await _count(cluster, key) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(wait=st.text(max_size=12) | st.sampled_from(["1h", "301s", "-1s", "nan", "1e400s", "PT0S", "250ms"]))
async def test_a_bad_wait_is_a_400_that_says_so(cluster: Cluster, wait: str) -> None:
    async with cluster.http.put(f"http://{cluster.admin}/state/Counter/w/count", params={"wait": wait},
                                json=1) as response:
        body = await response.json()
    assert response.status in (200, 400), body
    if response.status == 400:
        assert "wait" in body["message"], body
