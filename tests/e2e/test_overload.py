"""Overload end to end: a full key line answers 429 and a full worker 503, quickly, with
Retry-After, writing nothing; repeats of accepted requests still get their answer; and room
made by a finished invocation is usable again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import eventually

HOLD_MS = 120_000  # long enough to outlast the test: the holders are killed


@pytest.fixture
async def small_lines(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Two workers (a refusal may come back over the mesh), two waiting per key at most."""
    flags = ["--durability", "none", "--workers", "2", "--max-queue-per-key", "2"]
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        yield cluster


@pytest.fixture
async def small_worker(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    flags = ["--durability", "none", "--workers", "1", "--max-invocations", "3"]
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        yield cluster


async def _send(cluster: Cluster, path: str, body: object, idem: str | None = None) -> tuple[int, dict, dict[str, str]]:
    return await cluster.post(f"{path}/send", body, headers={"idempotency-key": idem} if idem else None)


async def _ids_on(cluster: Cluster, key: str) -> list[str]:
    _, listed = await cluster.get(f"/invocations?service=Counter&key={key}&limit=100", admin=True)
    return [i["id"] for i in listed["invocations"]]


async def _refusals(cluster: Cluster, limit: str) -> float:
    async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
        text = await response.text()
    line = f'sidecar_invocations_refused_total{{limit="{limit}"}}'
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


async def test_a_full_key_line_refuses_with_429_and_takes_work_again_once_it_moves(small_lines: Cluster) -> None:
    cluster = small_lines
    status, holder, _ = await _send(cluster, "/Counter/busy/hold", HOLD_MS)
    assert status == 202
    assert (await _send(cluster, "/Counter/busy/add", 1, idem="first"))[0] == 202
    assert (await _send(cluster, "/Counter/busy/add", 1))[0] == 202

    for refused in (await _send(cluster, "/Counter/busy/add", 1), await cluster.post("/Counter/busy/add", 1)):
        status, error, headers = refused
        assert status == 429, error
        assert error["code"] == 429 and "Counter/busy has 2 invocations waiting" in error["message"]
        assert headers["Retry-After"] == "1"
    assert len(await _ids_on(cluster, "busy")) == 3  # the refused ones left nothing behind

    status, repeat, _ = await _send(cluster, "/Counter/busy/add", 1, idem="first")
    assert (status, repeat["status"]) == (202, "PreviouslyAccepted")
    assert (await cluster.post("/Counter/other/add", 5))[:2] == (200, 5)  # other keys are not affected
    assert await _refusals(cluster, "key") == 2

    assert (await cluster.admin_call("POST", f"/invocations/{holder['invocationId']}/kill"))[0] == 202

    async def drained() -> bool:
        return (await cluster.post("/Counter/busy/get"))[:2] == (200, 2)

    await eventually(drained, what="the key's line to move")
    assert (await cluster.post("/Counter/busy/add", 1))[:2] == (200, 3)


async def test_a_full_worker_refuses_with_503_and_takes_work_again_once_one_ends(small_worker: Cluster) -> None:
    cluster = small_worker
    holders = []
    for key in ("a", "b", "c"):
        status, accepted, _ = await _send(cluster, f"/Counter/{key}/hold", HOLD_MS, idem=key)
        assert status == 202
        holders.append(accepted["invocationId"])

    status, error, headers = await cluster.post("/Counter/d/add", 1)
    assert status == 503, error
    assert error["code"] == 503 and "holds 3 unfinished invocations" in error["message"]
    assert headers["Retry-After"] == "1"
    assert await _ids_on(cluster, "d") == []
    status, repeat, _ = await _send(cluster, "/Counter/a/hold", HOLD_MS, idem="a")
    assert (status, repeat["status"]) == (202, "PreviouslyAccepted")
    assert await _refusals(cluster, "worker") == 1

    assert (await cluster.admin_call("POST", f"/invocations/{holders[0]}/kill"))[0] == 202

    async def room() -> bool:
        return (await cluster.post("/Counter/d/add", 1))[:2] == (200, 1)

    await eventually(room, what="a finished invocation to make room")
    for holder in holders[1:]:
        assert (await cluster.admin_call("POST", f"/invocations/{holder}/kill"))[0] == 202
