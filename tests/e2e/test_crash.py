"""Crash suite: SIGKILL the handler service and the sidecar, repeatedly, during 20-step invocations.

An external sink counts side effects by idempotency key. After the storm every invocation must
complete with the right output, no step may be skipped, and no step whose result was acknowledged
may run again. ``CRASH_ROUNDS`` (default 6) sets the number of kills; the long form runs
``CRASH_ROUNDS=60 pytest tests/e2e/test_crash.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import children, eventually

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "6"))
INVOCATIONS = 6
STEPS = 20


@pytest.mark.timeout(60 + ROUNDS * 30)
async def test_no_step_is_lost_or_repeated_across_sigkills(durable_cluster: Cluster) -> None:
    await _storm(durable_cluster)


@pytest.mark.timeout(60 + ROUNDS * 30)
async def test_no_step_is_lost_or_repeated_across_sigkills_in_request_response_mode(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    """The same storm, the handlers reached with one POST /invoke per step (a restarted sidecar
    registers them again with --register, and keeps their transport)."""
    async with running_cluster(tmp_path, http, request, ["--inactivity-timeout", "3", "--workers", "1"]) as cluster:
        registered = await cluster.cli("register", f"http://127.0.0.1:{cluster.handler_port}", "--force",
                                       "--request-response")
        assert registered.returncode == 0, registered.stderr
        await _storm(cluster)
        _, listed = await cluster.get("/deployments", admin=True)
        assert [d["transport"] for d in listed["deployments"]] == ["request-response"]


async def _storm(cluster: Cluster) -> None:
    """Kill the handlers, the sidecar or both, ``ROUNDS`` times, while 20-step jobs run; then
    check every job's output, journal and side effects."""
    rng = random.Random(1234)
    ids: list[str] = []

    async def submit(n: int) -> None:
        status, body, _ = await cluster.post("/Steps/twenty/send", f"job-{n}")
        assert status == 202
        ids.append(body["invocationId"])

    for n in range(INVOCATIONS):
        await submit(n)

    delivered = kills = 0
    for round_no in range(ROUNDS):
        async def progressed() -> int:
            total = sum((await cluster.sink_counts()).values())
            return total if total >= delivered + 3 else 0

        delivered = await eventually(progressed, timeout=60, what=f"progress before kill {round_no}")
        await submit(INVOCATIONS + round_no)  # keep work in flight for every round
        await asyncio.sleep(rng.uniform(0, 0.05))  # land the kill at a random instant of a step
        victim = ("handlers", "sidecar", "both")[round_no % 3]
        if victim in ("handlers", "both"):
            cluster.handlers.kill()
        if victim in ("sidecar", "both"):
            cluster.sidecar.kill()
        kills += 1
        if victim in ("handlers", "both"):
            await cluster.restart_handlers()
        if victim in ("sidecar", "both"):
            await cluster.start_sidecar()

    assert kills == ROUNDS
    outputs = await asyncio.gather(*(cluster.get(f"/restate/invocation/{i}/attach") for i in ids))
    assert outputs == [(200, [i * i for i in range(STEPS)])] * len(ids), cluster.logs()

    counts = await cluster.sink_counts()
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        stats = await response.json()
    assert stats["violations"] == [], "a step ran again after its result was acknowledged"
    for invocation_id in ids:
        _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
        runs = [e for e in shown["journal"] if e["kind"] == "Run"]
        assert [e["name"] for e in runs] == [f"step-{i}" for i in range(STEPS)]
        step_keys = {e["value"][1] for e in runs}
        assert len(step_keys) == STEPS
        # Every journaled step delivered its effect at least once; a repeat is only possible for a
        # step cut by a crash before its result was durable, and the receiver sees the same key.
        assert all(counts.get(key, 0) >= 1 for key in step_keys)
    repeats = sum(c - 1 for c in counts.values())
    assert repeats <= ROUNDS * len(ids)


def _workers_of(supervisor_pid: int) -> list[int]:
    """PIDs of the worker processes the supervisor started."""
    return children(supervisor_pid, b"sidecar.process.worker")


@pytest.mark.timeout(120)
async def test_a_killed_worker_is_replaced_and_its_partitions_recover(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    async with running_cluster(tmp_path, http, request, ["--inactivity-timeout", "3", "--workers", "2"]) as cluster:
        assert cluster.sidecar.proc is not None
        ids = []
        for n in range(INVOCATIONS):
            _, body, _ = await cluster.post("/Steps/twenty/send", f"w-{n}")
            ids.append(body["invocationId"])

        async def some_progress() -> bool:
            return sum((await cluster.sink_counts()).values()) >= 10

        await eventually(some_progress, what="some steps")
        victims = _workers_of(cluster.sidecar.proc.pid)
        assert len(victims) == 2
        os.kill(victims[1], signal.SIGKILL)

        async def attach(invocation_id: str) -> tuple[int, object]:
            status, body = await cluster.get(f"/restate/invocation/{invocation_id}/attach")
            assert status != 503, body  # the group restarting: a client retries
            return status, body

        # While the supervisor restarts the group, connections drop: retry as a client would.
        outputs = [await eventually(lambda i=i: attach(i), timeout=60, what="the result") for i in ids]
        assert outputs == [(200, [i * i for i in range(STEPS)])] * len(ids)
        async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
            assert (await response.json())["violations"] == []
        replaced = _workers_of(cluster.sidecar.proc.pid)
        assert len(replaced) == 2 and victims[1] not in replaced


@pytest.mark.timeout(60)
async def test_a_sidecar_whose_writer_died_stops_rather_than_serve_without_durability(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    async with running_cluster(tmp_path, http, request, ["--workers", "1"]) as cluster:
        assert cluster.sidecar.proc is not None
        assert (await cluster.post("/Counter/w/add", 1))[0] == 200
        (writer,) = children(cluster.sidecar.proc.pid, b"sidecar.store.writer")
        os.kill(writer, signal.SIGKILL)
        assert await asyncio.to_thread(cluster.sidecar.proc.wait, 30) == 1
        await cluster.start_sidecar()  # a restart recovers from what is on disk
        assert (await cluster.post("/Counter/w/add", 1))[:2] == (200, 2)
