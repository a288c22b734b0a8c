"""A handler service killed and restarted over and over while invocations wait on awakeables.

Each round: a few invocations publish an awakeable each and wait; the handler service is killed,
the awakeables resolved at random moments of a random downtime, the service restarted; every
invocation must then complete. The short form runs one round; ``STRESS_ROUNDS=200`` runs a long one.
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


#: Invocations waiting at once in each round: the prober wakes them together.
WAITERS = 3


async def _round(cluster: Cluster, name: str, rng: random.Random) -> None:
    names = [f"{name}-{n}" for n in range(WAITERS)]
    invocation_ids = [(await cluster.post("/Waits/approval/send", one))[1]["invocationId"] for one in names]
    awakeable_ids = [await eventually(lambda one=one: _note(cluster, one), what="an awakeable ID") for one in names]
    # Killed while the handlers sleep, await their awakeables, or have suspended (after a second).
    killed_after, downtime = rng.uniform(0.0, 2.0), rng.uniform(0.5, MAX_DOWNTIME_S)
    resolve_after = sorted(rng.uniform(0.0, downtime) for _ in names)
    await asyncio.sleep(killed_after)  # the moments and the downtime are what this test varies
    cluster.handlers.kill()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    for one, awakeable_id, after in zip(names, awakeable_ids, resolve_after):
        await asyncio.sleep(max(0.0, killed_at + after - loop.time()))
        assert (await cluster.post(f"/restate/awakeables/{awakeable_id}/resolve", one))[0] == 202
    await asyncio.sleep(max(0.0, killed_at + downtime - loop.time()))
    await cluster.restart_handlers()
    for one, invocation_id in zip(names, invocation_ids):
        try:
            answer = await asyncio.wait_for(cluster.get(f"/restate/invocation/{invocation_id}/attach"), 20)
        except asyncio.TimeoutError:
            shown = (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]
            raise AssertionError(f"{one} (killed after {killed_after:.1f} s, down {downtime:.1f} s, resolved "
                                 f"after {resolve_after}) did not complete: {shown}") from None
        assert answer == (200, f"approved: {one}")


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_waiters_complete_however_long_their_handler_service_is_down(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, workers: int,
) -> None:
    flags = ["--inactivity-timeout", "3", "--workers", str(workers)]
    rng = random.Random(int(os.environ.get("STRESS_SEED", "0")) or None)
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        for n in range(ROUNDS):
            await _round(cluster, f"r{n}", rng)
