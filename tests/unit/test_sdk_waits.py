"""Durable timers, awakeables and suspension, driven through the real app with the fake sidecar.

The same rules as ``test_sdk``: every wait has a deadline, and absence is shown with a barrier.
Suspension is a timer by nature; its tests use a short ``suspend_after`` and wait for the
``Suspend`` itself (with a deadline), never for a fixed time.
"""

import asyncio
import datetime
import math
import re
import time
from typing import Any

import msgspec

from handler_sdk import Context, ObjectContext, Service, TerminalError, VirtualObject
from handler_sdk.protocol import (
    Awakeable,
    Command,
    CompleteAwakeable,
    End,
    Entry,
    Failure,
    Heartbeat,
    Now,
    Run,
    Sleep,
    Suspend,
)
from sidecar.invoker.awakeable_ids import invocation_key, minted
from tests.unit.fake_sidecar import Connect, FakeSidecar

QUICK = 0.2  # suspend_after where a test wants the suspension
NEVER = math.inf  # where it must not interfere
INV = "inv_0123456789abcdefghjkmnpqrs"  # the real shape: "inv_" + 26 base32 characters


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Order(msgspec.Struct):
    item: str
    qty: int


async def command(sidecar: FakeSidecar, inv: str) -> Command:
    message = await sidecar.next(inv)
    assert isinstance(message, Command), message
    return message


async def ended(sidecar: FakeSidecar, inv: str) -> End:
    entries, end = await sidecar.finish(inv)
    assert entries == []
    return end


# --- sleep ------------------------------------------------------------------------------------------


def sleeper(unwound: list[str] | None = None, caught: list[BaseException] | None = None) -> Service:
    svc = Service("Sleeper")

    @svc.handler()
    async def nap(ctx: Context, seconds: float) -> str:
        try:
            await ctx.sleep(seconds)
        except Exception as exc:  # must not see a suspension
            if caught is not None:
                caught.append(exc)
            raise
        finally:
            if unwound is not None:
                unwound.append("finally")
        return "woke"

    @svc.handler()
    async def naps(ctx: Context) -> str:
        await ctx.sleep(datetime.timedelta(minutes=1))
        await ctx.sleep(60)
        return "woke twice"

    return svc


async def test_sleep_journals_its_wake_up_instant_and_continues_on_completion(connect: Connect) -> None:
    sidecar = await connect(sleeper(), suspend_after=NEVER)
    before = now_ms()
    inv = await sidecar.start("Sleeper", "nap", b"30.5", key=None)
    sleep = await command(sidecar, inv)
    after = now_ms()
    assert sleep.index == 1 and isinstance(sleep.entry, Sleep) and not sleep.entry.done
    assert before + 30_500 <= sleep.entry.wake_at_ms <= after + 30_500
    await sidecar.barrier()
    assert sidecar.idle(inv)  # it waits for the timer: no End yet

    await sidecar.complete(inv, 1)
    assert (await ended(sidecar, inv)).output == b'"woke"'


DAY_MS = 86_400_000


async def test_instants_journaled_follow_the_sidecars_test_clock_from_start_and_completions(
        connect: Connect) -> None:
    """A sidecar whose test clock runs 3 days ahead says so in the Start: ``ctx.now()`` and a
    sleep's wake-up are 3 days ahead too; a timer fired by an advance to 4 days says so in its
    Completion, and the same attempt's next instants are 4 days ahead."""
    svc = Service("Clocked")

    @svc.handler()
    async def run(ctx: Context) -> str:
        await ctx.now()
        await ctx.sleep(60)
        await ctx.now()
        await ctx.sleep(60)
        return "done"

    sidecar = await connect(svc, suspend_after=NEVER)
    before = now_ms()
    inv = await sidecar.start("Clocked", "run", key=None, clock_offset_ms=3 * DAY_MS)
    first, sleep = await command(sidecar, inv), await command(sidecar, inv)
    after = now_ms()
    assert isinstance(first.entry, Now) and before + 3 * DAY_MS <= first.entry.ms <= after + 3 * DAY_MS
    assert isinstance(sleep.entry, Sleep)
    assert before + 3 * DAY_MS + 60_000 <= sleep.entry.wake_at_ms <= after + 3 * DAY_MS + 60_000

    await sidecar.complete(inv, 2, clock_offset_ms=4 * DAY_MS)
    second, again = await command(sidecar, inv), await command(sidecar, inv)
    later = now_ms()
    assert isinstance(second.entry, Now) and before + 4 * DAY_MS <= second.entry.ms <= later + 4 * DAY_MS
    assert isinstance(again.entry, Sleep) and again.entry.wake_at_ms >= before + 4 * DAY_MS + 60_000
    await sidecar.complete(inv, 4)
    assert (await ended(sidecar, inv)).output == b'"done"'


async def test_zero_negative_and_timedelta_delays(connect: Connect) -> None:
    svc = Service("Delays")

    @svc.handler()
    async def delays(ctx: Context) -> str:
        try:
            await ctx.sleep(float("nan"))
        except ValueError:
            pass  # rejected before it claims a journal index
        await ctx.sleep(0)
        await ctx.sleep(-5)
        await ctx.sleep(datetime.timedelta(milliseconds=1500))
        return "done"

    sidecar = await connect(svc, suspend_after=NEVER)
    inv = await sidecar.start("Delays", "delays", key=None)
    wakes = []
    for index in (1, 2, 3):
        sleep = await command(sidecar, inv)  # dense indices: the NaN took none
        assert sleep.index == index and isinstance(sleep.entry, Sleep)
        wakes.append(sleep.entry.wake_at_ms)
        await sidecar.complete(inv, index)
    # Each wake-up is its own issue time plus the delay; the issue times are milliseconds apart.
    assert wakes[1] - wakes[0] in range(-5_000, -5_000 + 500)
    assert wakes[2] - wakes[0] in range(1_500, 1_500 + 500)
    assert (await ended(sidecar, inv)).output == b'"done"'


async def test_a_sleep_longer_than_ten_years_is_a_value_error_and_claims_no_index(connect: Connect) -> None:
    svc = Service("LongNap")

    @svc.handler()
    async def nap(ctx: Context, seconds: float) -> str:
        try:
            await ctx.sleep(seconds)
        except ValueError as exc:
            return str(exc)
        return "slept"

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("LongNap", "nap", b"1e12", key=None))
    assert entries == [] and end.output is not None and b"at most 3650 days" in end.output


async def test_a_replayed_done_sleep_does_not_wait_and_a_pending_one_waits(connect: Connect) -> None:
    sidecar = await connect(sleeper(), suspend_after=NEVER)
    done: list[Entry] = [Sleep(wake_at_ms=1, done=True)]
    inv = await sidecar.start("Sleeper", "nap", b"30", key=None, journal=done)
    assert (await ended(sidecar, inv)).output == b'"woke"'

    pending: list[Entry] = [Sleep(wake_at_ms=now_ms() + 60_000)]
    inv = await sidecar.start("Sleeper", "nap", b"30", key=None, journal=pending)
    await sidecar.barrier()
    assert sidecar.idle(inv)  # no new Sleep command, no End: it waits for entry 1
    await sidecar.complete(inv, 1)
    assert (await ended(sidecar, inv)).output == b'"woke"'


async def test_a_failed_timer_raises_terminal_error(connect: Connect) -> None:
    sidecar = await connect(sleeper(), suspend_after=NEVER)
    inv = await sidecar.start("Sleeper", "nap", b"1", key=None)
    await command(sidecar, inv)
    await sidecar.complete(inv, 1, failure=Failure(code=409, message="cancelled"))
    end = await ended(sidecar, inv)
    assert end.failure == Failure(code=409, message="cancelled", terminal=True)


# --- suspension -------------------------------------------------------------------------------------


async def test_waiting_only_on_a_timer_suspends_without_an_end(connect: Connect) -> None:
    unwound: list[str] = []
    caught: list[BaseException] = []
    sidecar = await connect(sleeper(unwound, caught), suspend_after=QUICK)
    inv = await sidecar.start("Sleeper", "nap", b"60", key=None, invocation_id=INV)
    sleep = await command(sidecar, inv)
    assert await sidecar.next(inv) == Suspend(invocation_id=inv, waiting_on=[1])
    await sidecar.barrier()
    assert sidecar.idle(inv)  # nothing after the Suspend: no End
    assert unwound == ["finally"] and caught == []  # finally ran; except Exception saw nothing

    # A completion for the suspended attempt is not its business any more.
    await sidecar.complete(inv, 1)
    await sidecar.barrier()
    assert sidecar.idle(inv)

    # The sidecar resumes it with the entry done: it replays and ends.
    assert isinstance(sleep.entry, Sleep)
    done = Sleep(wake_at_ms=sleep.entry.wake_at_ms, done=True)
    await sidecar.start("Sleeper", "nap", b"60", key=None, journal=[done], invocation_id=inv, attempt=2)
    assert (await ended(sidecar, inv)).output == b'"woke"'
    assert unwound == ["finally", "finally"] and caught == []


async def test_a_completion_before_suspend_after_continues_without_suspending(connect: Connect) -> None:
    # suspend_after is 1 s here so that the immediate completion surely comes first; the second
    # sleep then shows that the timer restarted rather than stopped for good.
    sidecar = await connect(sleeper(), suspend_after=1.0)
    inv = await sidecar.start("Sleeper", "naps", key=None)
    first = await command(sidecar, inv)
    await sidecar.complete(inv, first.index)
    second = await command(sidecar, inv)  # the code went on: no Suspend came in between
    assert (first.index, second.index) == (1, 2) and isinstance(second.entry, Sleep)
    assert await sidecar.next(inv) == Suspend(invocation_id=inv, waiting_on=[2])


async def test_a_completion_restarts_the_idle_clock_of_the_awaits_left(connect: Connect) -> None:
    svc = Service("Pair")

    @svc.handler()
    async def pair(ctx: Context) -> None:
        await asyncio.gather(ctx.sleep(1), ctx.sleep(2))

    # Heartbeats (sent only while the code waits) measure time without sleeping in the test.
    suspend_after = 0.5
    sidecar = await connect(svc, suspend_after=suspend_after, heartbeat_interval=0.05)
    inv = await sidecar.start("Pair", "pair", key=None)
    for _ in range(2):
        await command(sidecar, inv)
    for _ in range(4):  # >= 0.15 s into the wait: a clock that did not restart fires < 0.35 s later
        assert await sidecar.next(inv) == Heartbeat(invocation_id=inv)
    completed_at = time.monotonic()
    await sidecar.complete(inv, 1)
    while isinstance(message := await sidecar.next(inv), Heartbeat):
        pass
    assert message == Suspend(invocation_id=inv, waiting_on=[2])
    assert time.monotonic() - completed_at >= suspend_after


async def test_concurrent_awaits_suspend_on_every_pending_index(connect: Connect) -> None:
    svc = Service("Both")

    @svc.handler()
    async def both(ctx: Context) -> list[Any]:
        _, fut = ctx.awakeable()
        return list(await asyncio.gather(ctx.sleep(10), fut))

    sidecar = await connect(svc, suspend_after=QUICK)
    inv = await sidecar.start("Both", "both", key=None)
    assert isinstance((await command(sidecar, inv)).entry, Awakeable)
    assert isinstance((await command(sidecar, inv)).entry, Sleep)
    assert await sidecar.next(inv) == Suspend(invocation_id=inv, waiting_on=[1, 2])
    await sidecar.barrier()
    assert sidecar.idle(inv)

    # Resumed with both done, the gather completes from the journal.
    journal: list[Entry] = [Awakeable(id="awk_a", done=True, value=b'"yes"'), Sleep(wake_at_ms=1, done=True)]
    await sidecar.start("Both", "both", key=None, journal=journal, invocation_id=inv, attempt=2)
    assert (await ended(sidecar, inv)).output == b'[null,"yes"]'


async def test_only_awaited_pending_entries_are_waited_on(connect: Connect) -> None:
    svc = Service("Partly")
    go = asyncio.Event()

    async def hand_out() -> str:
        await go.wait()
        return "sent"

    @svc.handler()
    async def partly(ctx: Context) -> None:
        _, done_early = ctx.awakeable()  # 1: completed while the step below runs
        _, never_awaited = ctx.awakeable()  # 2: pending, but nobody awaits it
        await ctx.run("hand-out", hand_out)  # 3
        await asyncio.gather(done_early, ctx.sleep(5))  # the sleep is 4

    sidecar = await connect(svc, suspend_after=QUICK)
    inv = await sidecar.start("Partly", "partly", key=None)
    for _ in range(2):
        await command(sidecar, inv)
    await sidecar.complete(inv, 1, value=b"1")
    await sidecar.barrier()  # the completion is in before the step ends
    go.set()
    run = await command(sidecar, inv)
    await sidecar.ack(inv, run.index)
    assert isinstance((await command(sidecar, inv)).entry, Sleep)
    assert await sidecar.next(inv) == Suspend(invocation_id=inv, waiting_on=[4])


async def test_no_suspension_while_a_step_runs_and_heartbeats_while_waiting(connect: Connect) -> None:
    svc = Service("Busy")
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 1

    @svc.handler()
    async def busy(ctx: Context) -> list[Any]:
        return list(await asyncio.gather(ctx.sleep(10), ctx.run("work", work)))

    # suspend_after is 2 heartbeat intervals: 10 heartbeats without a Suspend mean the
    # step held it off for 5 times as long as it would otherwise take.
    sidecar = await connect(svc, suspend_after=0.1, heartbeat_interval=0.05)
    inv = await sidecar.start("Busy", "busy", key=None)
    assert isinstance((await command(sidecar, inv)).entry, Sleep)
    for _ in range(10):
        assert await sidecar.next(inv) == Heartbeat(invocation_id=inv)
    release.set()
    while isinstance(message := await sidecar.next(inv), Heartbeat):
        pass
    assert isinstance(message, Command) and message.entry == Run(name="work", value=b"1")
    await sidecar.ack(inv, message.index)
    # Now it only waits on the timer: it heartbeats meanwhile, then suspends.
    while isinstance(message := await sidecar.next(inv), Heartbeat):
        pass
    assert message == Suspend(invocation_id=inv, waiting_on=[1])


async def test_a_divergence_pending_at_suspension_time_fails_the_attempt(connect: Connect) -> None:
    svc = Service("Diverged")

    @svc.handler()
    async def diverged(ctx: Context) -> None:
        await asyncio.gather(ctx.sleep(10), ctx.run("new", lambda: 1), return_exceptions=True)

    sidecar = await connect(svc, suspend_after=QUICK)
    journal: list[Entry] = [Sleep(wake_at_ms=now_ms() + 60_000), Run(name="old", value=b"1")]
    inv = await sidecar.start("Diverged", "diverged", key=None, journal=journal)
    end = await sidecar.next(inv)  # not a Suspend: a resumed attempt would only diverge again
    assert isinstance(end, End) and end.failure is not None and not end.failure.terminal
    assert "NondeterminismError" in end.failure.message and "'old'" in end.failure.message


# --- awakeables -------------------------------------------------------------------------------------


def waiter() -> Service:
    svc = Service("Waiter")

    @svc.handler()
    async def order(ctx: Context) -> list[Any]:
        awk_id, fut = ctx.awakeable(type=Order)
        await ctx.run("hand-out", lambda: awk_id)
        got = await fut
        return [awk_id, type(got).__name__, got.item, got.qty]

    @svc.handler()
    async def approve(ctx: Context) -> str:
        _, fut = ctx.awakeable()
        try:
            return f"approved {await fut}"
        except TerminalError as exc:
            return f"rejected {exc.code}: {exc.message}"

    @svc.handler()
    async def strict(ctx: Context) -> Any:
        _, fut = ctx.awakeable()
        return await fut

    return svc


async def test_awakeable_ids_name_the_invocation_and_index_and_the_value_is_typed(connect: Connect) -> None:
    sidecar = await connect(waiter(), suspend_after=NEVER)
    inv = await sidecar.start("Waiter", "order", key=None, invocation_id=INV)
    created = await command(sidecar, inv)
    assert created.index == 1 and isinstance(created.entry, Awakeable) and not created.entry.done
    awk_id = created.entry.id
    assert re.fullmatch(rf"awk_{INV}_1_[A-Za-z0-9_-]{{22}}", awk_id)
    run = await command(sidecar, inv)
    await sidecar.ack(inv, run.index)
    await sidecar.complete(inv, 1, value=b'{"item":"tea","qty":2}')
    end = await ended(sidecar, inv)
    assert msgspec.json.decode(end.output or b"") == [awk_id, "Order", "tea", 2]

    # Another invocation gets another secret.
    other = await sidecar.start("Waiter", "order", key=None)
    other_entry = (await command(sidecar, other)).entry
    assert isinstance(other_entry, Awakeable) and other_entry.id.startswith(f"awk_{other}_1_")
    assert other_entry.id[len(f"awk_{other}_1_"):] != awk_id[len(f"awk_{INV}_1_"):]


async def test_awakeable_ids_are_signed_with_the_key_start_gives(connect: Connect) -> None:
    """The sidecar accepts the IDs the SDK makes with its invocation's key, and only those."""
    secret = b"s" * 32
    sidecar = await connect(waiter(), suspend_after=NEVER)
    inv = await sidecar.start("Waiter", "order", key=None, invocation_id=INV,
                              awakeable_key=invocation_key(secret, INV))
    created = (await command(sidecar, inv)).entry
    assert isinstance(created, Awakeable) and minted(secret, created.id)
    assert not minted(b"t" * 32, created.id)


async def test_a_replay_reuses_the_recorded_id_and_outcome(connect: Connect) -> None:
    sidecar = await connect(waiter(), suspend_after=NEVER)
    journal: list[Entry] = [
        Awakeable(id="awk_recorded", done=True, value=b'{"item":"pen","qty":1}'),
        Run(name="hand-out", value=b'"awk_recorded"'),
    ]
    inv = await sidecar.start("Waiter", "order", key=None, journal=journal)
    output = (await ended(sidecar, inv)).output or b""
    assert msgspec.json.decode(output) == ["awk_recorded", "Order", "pen", 1]

    # Recorded but not done: the same ID, and it waits for the completion.
    inv = await sidecar.start("Waiter", "order", key=None, journal=[Awakeable(id="awk_pending")])
    await sidecar.ack(inv, (await command(sidecar, inv)).index)  # the hand-out step is new
    await sidecar.barrier()
    assert sidecar.idle(inv)
    await sidecar.complete(inv, 1, value=b'{"item":"cup","qty":3}')
    output = (await ended(sidecar, inv)).output or b""
    assert msgspec.json.decode(output) == ["awk_pending", "Order", "cup", 3]


async def test_a_rejection_raises_terminal_error_in_the_handler(connect: Connect) -> None:
    sidecar = await connect(waiter(), suspend_after=NEVER)
    inv = await sidecar.start("Waiter", "approve", key=None)
    await command(sidecar, inv)
    await sidecar.complete(inv, 1, failure=Failure(code=403, message="not today"))
    assert (await ended(sidecar, inv)).output == b'"rejected 403: not today"'

    inv = await sidecar.start("Waiter", "strict", key=None)
    await command(sidecar, inv)
    await sidecar.complete(inv, 1, failure=Failure(code=422, message="bad"))
    assert (await ended(sidecar, inv)).failure == Failure(code=422, message="bad", terminal=True)

    # A recorded rejection is raised again on replay.
    journal: list[Entry] = [Awakeable(id="awk_r", done=True, failure=Failure(code=410, message="gone"))]
    inv = await sidecar.start("Waiter", "approve", key=None, journal=journal)
    assert (await ended(sidecar, inv)).output == b'"rejected 410: gone"'


async def test_a_completion_before_the_await_is_kept(connect: Connect) -> None:
    svc = Service("Early")
    go = asyncio.Event()

    async def elsewhere() -> str:
        await go.wait()
        return "done"

    @svc.handler()
    async def early(ctx: Context) -> list[Any]:
        awk_id, fut = ctx.awakeable(type=int)
        await ctx.run("elsewhere", elsewhere)
        await ctx.sleep(0)  # more waiting between the completion and the await
        return [await fut, await fut]  # awaiting twice gives the same value

    sidecar = await connect(svc, suspend_after=NEVER)
    inv = await sidecar.start("Early", "early", key=None)
    await command(sidecar, inv)
    await sidecar.complete(inv, 1, value=b"42")
    await sidecar.barrier()  # processed while nothing awaits it
    go.set()
    run = await command(sidecar, inv)
    await sidecar.ack(inv, run.index)
    sleep = await command(sidecar, inv)
    await sidecar.complete(inv, sleep.index)
    assert (await ended(sidecar, inv)).output == b"[42,42]"


async def test_resolve_and_reject_awakeable_are_journaled_once(connect: Connect) -> None:
    obj = VirtualObject("Approver")

    @obj.handler()
    async def decide(ctx: ObjectContext, awk_ids: list[str]) -> None:
        for bad in (
            lambda: ctx.resolve_awakeable(1, 1),  # type: ignore[arg-type]
            lambda: ctx.reject_awakeable("awk_a", 1),  # type: ignore[arg-type]
            lambda: ctx.resolve_awakeable("awk_a", object()),
        ):
            try:
                bad()
            except TypeError:
                pass  # refused before it claims a journal index
        ctx.resolve_awakeable(awk_ids[0], {"ok": True})
        ctx.reject_awakeable(awk_ids[1], "no budget", code=402)
        ctx.reject_awakeable(awk_ids[2], "no")

    sidecar = await connect(obj, suspend_after=NEVER)
    body = b'["awk_a","awk_b","awk_c"]'
    inv = await sidecar.start("Approver", "decide", body)
    entries, end = await sidecar.finish(inv)
    assert entries == [
        CompleteAwakeable(id="awk_a", value=b'{"ok":true}'),
        CompleteAwakeable(id="awk_b", failure=Failure(code=402, message="no budget", terminal=True)),
        CompleteAwakeable(id="awk_c", failure=Failure(code=500, message="no", terminal=True)),
    ]
    assert end.output == b"null"
    again, end = await sidecar.finish(await sidecar.start("Approver", "decide", body, journal=entries))
    assert again == [] and end.output == b"null"


async def test_new_kinds_are_matched_on_replay(connect: Connect) -> None:
    svc = Service("Mixed")

    @svc.handler()
    async def mixed(ctx: Context) -> None:
        await ctx.sleep(0)
        ctx.awakeable()
        ctx.resolve_awakeable("awk_x", 1)

    sidecar = await connect(svc, suspend_after=NEVER)
    cases: list[tuple[list[Entry], int, str, str]] = [
        ([Awakeable(id="awk_1")], 1, "Sleep", "Awakeable"),
        ([Run(name="nap", value=b"1")], 1, "Sleep", "Run 'nap'"),
        ([Sleep(wake_at_ms=1, done=True), Sleep(wake_at_ms=2)], 2, "Awakeable", "Sleep"),
        ([Sleep(wake_at_ms=1, done=True), Awakeable(id="awk_1"), Awakeable(id="awk_2")], 3,
         "CompleteAwakeable", "Awakeable"),
        ([Sleep(wake_at_ms=1, done=True), CompleteAwakeable(id="awk_1", value=b"1")], 2,
         "Awakeable", "CompleteAwakeable"),
    ]
    for journal, index, expected, recorded in cases:
        inv = await sidecar.start("Mixed", "mixed", key=None, journal=journal)
        entries, end = await sidecar.finish(inv)
        assert entries == [] and end.failure is not None and not end.failure.terminal
        message = end.failure.message
        assert message.startswith("NondeterminismError:")
        assert f"journal entry {index} is {recorded}," in message
        assert f"the code issued {expected}." in message
