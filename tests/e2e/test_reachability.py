"""A handler service that was down and comes back: what waited for it runs at once, unharmed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import eventually

#: How long the handler service stays down; long enough for several backoffs of a failing handler.
DOWNTIME_S = 4.0
#: How soon after it is back every waiting invocation must have completed.
BOUND_S = 2.0


async def _reason_has(cluster: Cluster, invocation_id: str, text: str) -> bool:
    return text in (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]["reason"]


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_invocations_waiting_on_an_unreachable_deployment_run_as_soon_as_it_is_back(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, workers: int,
) -> None:
    flags = ["--durability", "none", "--inactivity-timeout", "3", "--workers", str(workers)]
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        assert (await cluster.post("/Counter/warm/add", 1))[0] == 200  # links are open
        cluster.handlers.kill()
        ids = []
        for n in range(6):
            status, body, _ = await cluster.post(f"/Counter/down-{n % 3}/add/send", 1)
            assert status == 202, body
            ids.append(body["invocationId"])

        async def all_waiting() -> bool:
            shown = [(await cluster.get(f"/invocations/{i}", admin=True))[1] for i in ids]
            return all(s["status"] in ("backing-off", "pending") for s in shown) and \
                any("unreachable since" in s["reason"] for s in shown)

        await eventually(all_waiting, what="the invocations to wait on the unreachable deployment")
        status, body, _ = await cluster.post("/Counter/down-cancelled/add/send", 1)
        assert status == 202, body
        cancelled = body["invocationId"]
        await eventually(lambda: _reason_has(cluster, cancelled, "unreachable since"), what="it to wait too")
        status, _ = await cluster.admin_call("POST", f"/invocations/{cancelled}/cancel")
        assert status == 202
        # It never ran: cancelled at once, without waiting for its deployment.
        assert (await cluster.get(f"/invocations/{cancelled}", admin=True))[1]["status"] == "cancelled"
        await asyncio.sleep(DOWNTIME_S)  # the outage itself, not a wait for a condition
        _, during = await cluster.get(f"/invocations/{ids[0]}", admin=True)
        assert during["status"] == "backing-off" and "unreachable since" in during["reason"], during
        assert "Z" in during["reason"].split("unreachable since", 1)[1], "the time is ISO 8601 UTC"

        await cluster.restart_handlers()
        back = time.monotonic()

        async def all_completed() -> bool:
            shown = [(await cluster.get(f"/invocations/{i}", admin=True))[1] for i in ids]
            assert all(s["status"] == "completed" for s in shown), [(s["status"], s["reason"]) for s in shown]
            return True

        await eventually(all_completed, timeout=BOUND_S, what=f"every call to complete within {BOUND_S} s")
        took = time.monotonic() - back
        for invocation_id in ids:
            _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
            # Waiting for the deployment spent no attempt and no failure of the retry budget.
            assert (shown["attempts"], shown["failures"]) == (1, 0), shown
        print(f"completed {took:.2f} s after the handler service was back")
