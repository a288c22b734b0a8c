"""What steps cost, as the invoker files and counts it: once per journaled step, when its entry
commits, never again for a step replayed by a retry; a cost no sum could hold is refused."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

from handler_sdk import Context, Service
from handler_sdk.protocol import Command, Run
from sidecar.store.lmdb_store import CostFilter
from tests.procs import eventually
from tests.unit.held_store import Rig, rig

DEADLINE = 5.0
svc = Service("Spender")
failed_once: set[str] = set()


@svc.handler()
async def spend(ctx: Context) -> str:
    await ctx.run("plan", lambda: "p", cost=0.25)
    if ctx.invocation_id not in failed_once:  # the attempt fails after its first step is durable
        failed_once.add(ctx.invocation_id)
        raise RuntimeError("the handler fell over")
    await ctx.run("act", lambda: "a", cost=0.5)
    await ctx.run("free", lambda: "f")
    return "spent"


@svc.handler()
async def wait(ctx: Context) -> str:
    _, value = ctx.awakeable()
    return await value


def _counted(r: Rig, step: str) -> float:
    """``sidecar_cost_total`` of Spender/spend's ``step``, as ``GET /metrics`` shows it."""
    line = re.search(rf'^sidecar_cost_total{{handler="spend",service="Spender",step="{step}"}} (\S+)$',
                     r.metrics.exposition().decode(), re.MULTILINE)
    return float(line.group(1)) if line else 0.0


async def test_a_step_is_filed_and_counted_once_though_a_retry_replays_it(tmp_path: Path) -> None:
    async with rig(tmp_path, svc, retry_initial_interval_s=0.01) as r:
        invocation_id = await r.submit("Spender", "spend")
        record = await asyncio.wait_for(r.invoker.queries.outcome(invocation_id), DEADLINE)
        assert (record.status, record.attempts) == ("completed", 2)
        rows = r.store.read_costs(CostFilter(service="Spender")).rows
        assert [(row.invocation_id, row.step, row.cost, row.attempts) for row in rows] == [
            (invocation_id, "plan", 0.25, 1), (invocation_id, "act", 0.5, 1)]
        assert (_counted(r, "plan"), _counted(r, "act"), _counted(r, "free")) == (0.25, 0.5, 0.0)


async def test_a_cost_that_is_not_a_finite_number_zero_or_more_fails_the_attempt(tmp_path: Path) -> None:
    async with rig(tmp_path, svc) as r:
        for cost in (math.nan, math.inf, -1.0):
            invocation_id = await r.submit("Spender", "wait")
            live = r.invoker.table.active[invocation_id]

            async def waiting() -> bool:
                return live.journal is not None and len(live.journal) == 2 and not r.store.queued
            await eventually(waiting, timeout=DEADLINE, what="the awakeable to be journaled")
            assert live.attempt is not None and live.journal is not None
            live.attempt.on_message(Command(invocation_id, len(live.journal), Run("bad", value=b"1", cost=cost)))
            assert live.record.status == "backing-off"
            assert f"Run cost must be a finite number, zero or more, not {cost}" in (live.record.last_error or "")
            r.invoker.operations.kill(invocation_id)
        assert r.store.read_costs(CostFilter()).rows == []
