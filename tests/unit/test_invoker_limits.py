"""The invoker's side of limit groups, the test playing the handler on fake links: a slot per step
until its Run entry or its attempt's end, the line, an attempt freed while its invocation waits,
an unknown group refused."""

from __future__ import annotations

from pathlib import Path

from handler_sdk.protocol import AskLeave, Cancel, Command, End, Leave, Run, Start
from sidecar.cli.config import Settings
from sidecar.cli.limits import LimitConfig
from tests.unit.fake_links import Sent
from tests.unit.test_invoker import Rig, rig

ONE = Settings(limits={"g": LimitConfig(concurrency=1)})


async def _ask(r: Rig, start: Sent[Start], index: int = 1, wait_ms: int = 60_000) -> None:
    start.link.answer(AskLeave(start.frame.invocation_id, index, limit="g", wait_ms=wait_ms))


def _in_use(r: Rig) -> tuple[int, int]:
    assert r.invoker.limits is not None
    [view] = r.invoker.limits.views()
    return view.in_use, view.waiting


async def test_a_slot_is_held_until_the_steps_run_entry_or_its_attempts_end(tmp_path: Path) -> None:
    async with rig(tmp_path, ONE) as r:
        first, second, third = [await r.submit("Greeter", "greet") for _ in range(3)]
        starts = [await r.start_of(i) for i in (first, second, third)]
        for start in starts:
            await _ask(r, start)
        assert (await r.links.expect(Leave, first)).frame == Leave(first, 1)
        assert _in_use(r) == (1, 2) and not r.links.frames(second, Leave)
        await _ask(r, starts[0])  # its next try: it still holds the slot
        await r.links.expect(Leave, first)
        starts[0].link.answer(Command(first, 1, Run("step", value=b"1")))  # the step is over
        assert (await r.links.expect(Leave, second)).frame == Leave(second, 1)
        assert _in_use(r) == (1, 1)
        r.invoker.operations.kill(second)  # its attempt ends without a Run entry: the slot goes back
        await r.links.expect(Leave, third)
        starts[2].link.answer(End(third, output=b'"ok"'))
        await r.outcome(third)
        assert _in_use(r) == (0, 0)


async def test_a_waiting_step_frees_its_attempt_and_finds_its_slot_when_it_comes_back(tmp_path: Path) -> None:
    async with rig(tmp_path, ONE) as r:
        holder, waiter = await r.submit("Greeter", "greet"), await r.submit("Greeter", "greet")
        holding = await r.start_of(holder)
        await _ask(r, holding)
        await r.links.expect(Leave, holder)
        waiting = await r.start_of(waiter)
        await _ask(r, waiting, wait_ms=20)  # its suspend_after: 20 ms
        await r.links.expect(Cancel, waiter)
        record = r.current(waiter)
        assert (record.status, record.failures) == ("backing-off", 0)
        assert record.last_error == "waiting for a slot of limit g"
        assert len(r.store.read_journal(waiter)) == 1  # nothing journaled: its Input only
        r.pool.go_down()  # a SIGKILLed handler: its attempt's slot goes back
        r.pool.come_up()
        again = await r.start_of(waiter)
        await _ask(r, again)
        assert (await r.links.expect(Leave, waiter)).frame == Leave(waiter, 1)  # held for it
        assert _in_use(r) == (1, 0)


async def test_an_unknown_group_fails_the_step_with_a_400_naming_it(tmp_path: Path) -> None:
    async with rig(tmp_path, ONE) as r:
        invocation = await r.submit("Greeter", "greet")
        start = await r.start_of(invocation)
        start.link.answer(AskLeave(invocation, 1, limit="antropic"))
        told = (await r.links.expect(Leave, invocation)).frame
        assert told.failure is not None and told.failure.code == 400
        assert "no limit group named 'antropic' (configured: g)" in told.failure.message
