"""A client that stops waiting for a call (a timeout, a poller) leaves nothing waiting behind in
the sidecar, on whichever worker it landed, and its invocation still runs, once."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.e2e.conftest import Cluster
from tests.procs import eventually

CALLS = 6


async def _waiting_callers(cluster: Cluster) -> float:
    async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
        text = await response.text()
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith("sidecar_waiting_callers"))


async def test_callers_that_hang_up_stop_waiting_and_their_invocations_still_run(cluster: Cluster) -> None:
    status, holder, _ = await cluster.post("/Counter/abandoned/hold/send", 120_000)
    assert status == 202
    impatient = aiohttp.ClientTimeout(total=0.5)
    for n in range(CALLS):  # each on its own connection: they land on either worker
        async with aiohttp.ClientSession(timeout=impatient) as client:
            try:
                async with client.post(f"http://{cluster.ingress}/Counter/abandoned/add", json=1):
                    raise AssertionError("the key is held: the call cannot have answered")
            except asyncio.TimeoutError:
                pass

    async def released() -> bool:
        return await _waiting_callers(cluster) == 0

    await eventually(released, what="the abandoned calls to stop waiting")
    assert (await cluster.admin_call("POST", f"/invocations/{holder['invocationId']}/kill"))[0] == 202

    async def all_added() -> bool:
        return (await cluster.post("/Counter/abandoned/get"))[:2] == (200, CALLS)

    await eventually(all_added, what="the abandoned calls' invocations to run")
