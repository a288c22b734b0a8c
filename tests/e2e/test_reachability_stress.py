"""A handler service killed and restarted over and over while invocations wait on awakeables.

Each round: an invocation publishes an awakeable and waits; the handler service is killed, the
awakeable resolved at a random moment of a random downtime, the service restarted; the invocation
must then complete. The short form runs one round; ``STRESS_ROUNDS=200`` runs a long one.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.e2e.test_waits import _note
from tests.procs import eventually

ROUNDS = int(os.environ.get("STRESS_ROUNDS", "1"))
#: The longest downtime a round picks (the short form keeps to short ones).
MAX_DOWNTIME_S = 6.0 if ROUNDS > 1 else 1.5


async def _round(cluster: Cluster, name: str, rng: random.Random) -> None:
    _, body, _ = await cluster.post("/Waits/approval/send", name)
    invocation_id = body["invocationId"]
    awakeable_id = await eventually(lambda: _note(cluster, name), what="the awakeable ID")
    # Killed while its handler sleeps, awaits the awakeable, or has suspended (after a second).
    killed_after, downtime = rng.uniform(0.0, 2.0), rng.uniform(0.5, MAX_DOWNTIME_S)
    resolve_after = rng.uniform(0.0, downtime)
    await asyncio.sleep(killed_after)
    cluster.handlers.kill()
    loop = asyncio.get_running_loop()
    back_at = loop.time() + downtime
    await asyncio.sleep(resolve_after)  # the downtime is what this test varies
    assert (await cluster.post(f"/restate/awakeables/{awakeable_id}/resolve", name))[0] == 202
    await asyncio.sleep(max(0.0, back_at - loop.time()))
    await cluster.restart_handlers()

    async def attached() -> tuple[int, object]:
        return await cluster.get(f"/restate/invocation/{invocation_id}/attach")

    try:
        answer = await asyncio.wait_for(attached(), 20)
    except asyncio.TimeoutError:
        shown = (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]
        raise AssertionError(f"{name} (killed after {killed_after:.1f} s, down {downtime:.1f} s, resolved after {resolve_after:.1f} s) "
                             f"did not complete: {shown}") from None
    assert answer == (200, f"approved: {name}")


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_waiters_complete_however_long_their_handler_service_is_down(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, workers: int,
) -> None:
    flags = ["--inactivity-timeout", "3", "--workers", str(workers)]
    rng = random.Random(int(os.environ.get("STRESS_SEED", "0")) or None)
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        for n in range(ROUNDS):
            await _round(cluster, f"r{n}", rng)
