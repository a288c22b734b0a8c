"""Operators' state edits wait in their key's line among exclusive invocations (the invoker over
a real store, serving a real SDK app): each applies in its turn, after the holder's writes and
before the next invocation's snapshot; one that gives up waiting is never applied."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from handler_sdk import ObjectContext, VirtualObject
from handler_sdk.protocol import ClearState, SetState
from sidecar.invoker import KeyHeld
from tests.procs import eventually
from tests.unit.held_store import Rig, rig

DEADLINE = 5.0
KEY = ("Tally", "k")
tally = VirtualObject("Tally")
announced: asyncio.Queue[str]


@pytest.fixture(autouse=True)
def _announcements() -> None:
    """A queue of this test's loop for the awakeable IDs the handler announces."""
    global announced
    announced = asyncio.Queue()


@tally.handler()
async def bump(ctx: ObjectContext) -> int:
    n = await ctx.get("n", type=int) or 0
    awakeable_id, go = ctx.awakeable()
    announced.put_nowait(awakeable_id)
    await go
    ctx.set("n", n + 1)
    return n + 1


@tally.handler()
async def read(ctx: ObjectContext) -> int | None:
    return await ctx.get("n", type=int)


async def _holding(r: Rig) -> tuple[str, str]:
    """An invocation that has read ``n`` and holds the key, waiting on an awakeable."""
    invocation_id = await r.submit("Tally", "bump", key="k")
    return invocation_id, await asyncio.wait_for(announced.get(), DEADLINE)


async def _in_line(r: Rig, count: int) -> None:
    async def check() -> bool:
        return r.invoker.table.keys.waiting(KEY) == count
    await eventually(check, timeout=DEADLINE, what=f"{count} to wait in the key's line")


async def _output(r: Rig, invocation_id: str) -> bytes | None:
    return (await asyncio.wait_for(r.invoker.queries.outcome(invocation_id), DEADLINE)).output


async def test_edits_take_their_turns_between_invocations(tmp_path: Path) -> None:
    async with rig(tmp_path, tally) as r:
        edits = r.invoker.state_edits
        holder, awakeable_id = await _holding(r)
        first = asyncio.ensure_future(edits.edit(*KEY, SetState("n", b"10"), DEADLINE))
        await _in_line(r, 1)
        reader = await r.submit("Tally", "read", key="k")
        second = asyncio.ensure_future(edits.edit(*KEY, SetState("n", b"20"), DEADLINE))
        await _in_line(r, 3)
        abandoned = asyncio.ensure_future(edits.edit(*KEY, ClearState("n"), DEADLINE))
        await _in_line(r, 4)
        abandoned.cancel()  # its caller hung up while it waited
        await _in_line(r, 3)
        await r.invoker.resolutions.resolve(awakeable_id, b"null", None)
        assert await _output(r, holder) == b"1"
        assert await _output(r, reader) == b"10"  # after the first edit, before the second
        assert ((await first).waited_for, (await second).waited_for) == (holder, holder)
        assert abandoned.cancelled()
        assert r.store.read_state(*KEY) == {"n": b"20"}  # the abandoned clear never applied
        assert r.invoker.table.keys.waiting(KEY) == 0 and not r.invoker.table.keys.locked(KEY)


async def test_an_edit_that_waited_too_long_changes_nothing(tmp_path: Path) -> None:
    async with rig(tmp_path, tally) as r:
        holder, awakeable_id = await _holding(r)
        with pytest.raises(KeyHeld, match=f"invocation {holder} \\(running\\) held the key"):
            await r.invoker.state_edits.edit(*KEY, SetState("n", b"7"), 0.05)
        assert r.invoker.table.keys.waiting(KEY) == 0
        await r.invoker.resolutions.resolve(awakeable_id, b"null", None)
        assert await _output(r, holder) == b"1"
        assert r.store.read_state(*KEY) == {"n": b"1"}
        applied = await r.invoker.state_edits.edit(*KEY, SetState("n", b"7"), 0)  # a free key needs no wait
        assert applied.waited_for is None and r.store.read_state(*KEY) == {"n": b"7"}
