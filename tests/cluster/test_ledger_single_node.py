"""The ledger checker, proven on one sidecar before it judges a cluster: the workload through two
SIGKILLs of a durable sidecar must pass every invariant of ``ledger.py``."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.ledger import check, read_ledger
from tests.cluster.workload import Client, Workload, drive, gather_evidence
from tests.e2e.conftest import Cluster
from tests.procs import eventually

KILLS = 2


@pytest.mark.timeout(240)
async def test_the_workload_keeps_every_invariant_across_sidecar_sigkills(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    rng = random.Random(13)
    async with aiohttp.ClientSession() as http:
        cluster = Cluster(tmp_path, http, handlers="tests.cluster.ledger_service:SERVICES",
                          sidecar_flags=["--durability", "fsync", "--inactivity-timeout", "3"],
                          handler_env={"LEDGER_PATH": str(ledger)})
        passed = False
        try:
            await cluster.start()
            client = Client(http, lambda: [cluster.ingress])
            calls = Workload(keys=6, adds=18, flows=4).calls("single")
            work = asyncio.create_task(drive(client, calls))
            seen = 0
            for round_no in range(KILLS):
                async def progressed(floor: int = seen) -> int:
                    lines = len(read_ledger(ledger))
                    return lines if lines >= floor + 10 else 0

                seen = await eventually(progressed, timeout=60, what=f"ledger progress before kill {round_no}")
                await asyncio.sleep(rng.uniform(0, 0.03))  # a random instant of a step
                assert not work.done(), "the workload ended before the sidecar was killed"
                cluster.sidecar.kill()
                await cluster.start_sidecar()
            await work
            evidence = await gather_evidence(http, cluster.admin, client, calls, ledger, kills=KILLS)
            assert sum(call.tries - 1 for call in calls) > 0, "no call was cut by a kill: the test proved nothing"
            check(evidence)
            passed = True
        finally:
            cluster.stop()
            if not passed:
                print(cluster.logs())
