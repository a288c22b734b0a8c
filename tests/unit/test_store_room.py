"""A journal write that fails for want of room (map or disk full) is no failure of the handler:
the invocation waits for room, spending none of its retry budget, and completes once there is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from handler_sdk import Context, Service
from tests.procs import eventually
from tests.unit.held_store import HeldStore, rig

DEADLINE = 5.0
svc = Service("Filler")
runs: list[str] = []
stores: list[HeldStore] = []


def _charge() -> str:
    runs.append("charge")
    if len(runs) == 1:
        stores[0].room = False  # the disk fills up while the step runs: its entry cannot be written
    return "charged"


@svc.handler()
async def pay(ctx: Context) -> str:
    return await ctx.run("charge", _charge)


async def test_a_step_whose_entry_finds_no_room_waits_for_room_without_spending_attempts(tmp_path: Path) -> None:
    async with rig(tmp_path, svc, retry_max_attempts=1) as r:  # one failure would pause it
        stores.append(r.store)
        invocation_id = await r.submit("Filler", "pay")

        async def waiting_for_room() -> bool:
            record = r.invoker.table.current(invocation_id)
            assert record.status != "paused", record.last_error
            return record.status == "backing-off" and "waiting for room" in (record.last_error or "")
        await eventually(waiting_for_room, timeout=DEADLINE, what="the invocation to wait for room")
        assert r.invoker.table.current(invocation_id).failures == 0

        r.store.room = True  # a purge, a bigger disk
        record = await asyncio.wait_for(r.invoker.queries.outcome(invocation_id), DEADLINE)
        assert (record.status, record.output) == ("completed", b'"charged"')
        assert runs == ["charge", "charge"]  # its entry was never durable: the step ran again
