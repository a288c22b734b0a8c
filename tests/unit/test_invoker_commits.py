"""A commit future that someone cancelled, or an operator acting before a creation commits,
never strands an invocation (the invoker over a store whose commits the test lets through)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from handler_sdk import Context, Service
from sidecar.invoker import Invoker
from tests.procs import eventually
from tests.unit.held_store import HeldStore, rig

DEADLINE = 5.0
svc = Service("Waiter")
announced: asyncio.Queue[str] = asyncio.Queue()
ran: list[str] = []


@svc.handler()
async def wait(ctx: Context) -> str:
    awakeable_id, value = ctx.awakeable()
    announced.put_nowait(awakeable_id)
    return await value


@svc.handler()
async def quick(ctx: Context) -> str:
    ran.append(ctx.invocation_id)
    return "done"


async def _queued(store: HeldStore) -> None:
    async def check() -> bool:
        return bool(store.queued)
    await eventually(check, timeout=DEADLINE, what="a write to be submitted")


def _cancel_queued(store: HeldStore) -> None:
    """Every caller of the writes now queued hung up (their batches are committed all the same)."""
    for _, future, _ in store.queued:
        future.cancel()


async def _outcome(invoker: Invoker, invocation_id: str):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(invoker.queries.outcome(invocation_id), DEADLINE)


async def test_a_resolution_reaches_its_attempt_though_the_request_that_brought_it_hung_up(tmp_path: Path) -> None:
    async with rig(tmp_path, svc) as r:
        invocation_id = await r.submit("Waiter", "wait")
        awakeable_id = await asyncio.wait_for(announced.get(), DEADLINE)
        live = r.invoker.table.active[invocation_id]

        async def journaled() -> bool:  # resolved later than this, it is kept until it is
            return live.journal is not None and len(live.journal) == 2
        await eventually(journaled, timeout=DEADLINE, what="the awakeable to be journaled")
        r.store.auto = False
        # The ingress awaits this future; a client that hangs up cancels what its handler awaits.
        r.invoker.resolutions.resolve(awakeable_id, b'"yes"', None).cancel()
        r.store.auto = True
        r.store.commit()
        record = await _outcome(r.invoker, invocation_id)
        assert (record.status, record.output) == ("completed", b'"yes"')


async def test_an_end_whose_commit_future_was_cancelled_still_finishes(tmp_path: Path) -> None:
    async with rig(tmp_path, svc) as r:
        r.store.auto = False
        submitted = asyncio.ensure_future(r.submit("Waiter", "quick"))
        await _queued(r.store)
        r.store.commit()  # the creation
        invocation_id = await submitted
        live = r.invoker.table.active[invocation_id]

        async def ended() -> bool:
            return live.record.status == "completed" and bool(r.store.queued)
        await eventually(ended, timeout=DEADLINE, what="the end to be submitted")
        _cancel_queued(r.store)
        r.store.auto = True
        r.store.commit()
        record = await _outcome(r.invoker, invocation_id)
        assert (record.status, record.output) == ("completed", b'"done"')
        assert invocation_id not in r.invoker.table.active


async def test_a_creation_whose_commit_future_was_cancelled_still_runs(tmp_path: Path) -> None:
    async with rig(tmp_path, svc) as r:
        r.store.auto = False
        submitted = asyncio.ensure_future(r.submit("Waiter", "quick"))
        await _queued(r.store)
        _cancel_queued(r.store)
        r.store.auto = True
        r.store.commit()
        invocation_id = await submitted
        record = await _outcome(r.invoker, invocation_id)
        assert (record.status, record.output) == ("completed", b'"done"')


@pytest.mark.parametrize("action", ["kill", "cancel"])
async def test_an_invocation_ended_before_its_creation_commits_never_runs(tmp_path: Path, action: str) -> None:
    async with rig(tmp_path, svc) as r:
        r.store.auto = False
        submitted = asyncio.ensure_future(r.submit("Waiter", "quick"))
        await _queued(r.store)
        (invocation_id,) = r.invoker.table.active
        getattr(r.invoker.operations, action)(invocation_id)
        r.store.auto = True
        r.store.commit()
        assert await submitted == invocation_id
        record = await _outcome(r.invoker, invocation_id)
        assert (record.status, record.attempts) == ("killed" if action == "kill" else "cancelled", 0)
        assert invocation_id not in r.invoker.table.active
        assert r.store.get_invocation(invocation_id).status == record.status  # type: ignore[union-attr]
        # A quick invocation after it runs to its end: had the ended one launched, it would have run first.
        assert await _outcome(r.invoker, await r.submit("Waiter", "quick")) is not None
        assert invocation_id not in ran
