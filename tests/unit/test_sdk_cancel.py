"""Cooperative cancellation and step timeouts, driven through the real app with the fake sidecar.

A cancellation surfaces once, as ``TerminalError(409)``, at the handler's pending or next await on
the context, and is journaled there (a ``Run`` named ``"<cancelled>"``) so that later attempts
(which the sidecar starts with a ``Cancel`` right behind the ``Start``) raise it at the same await.
"""

import asyncio
import math
import threading
from typing import Any

import msgspec

from handler_sdk import Context, RetryPolicy, Service, TerminalError
from handler_sdk.protocol import Call, Command, End, Entry, Failure, Run, Sleep
from tests.unit.fake_sidecar import DEADLINE, FAST, Connect, FakeSidecar

NEVER = math.inf
CANCELLED = Run(name="<cancelled>", failure=Failure(code=409, message="cancelled"))


def shop(refunds: list[int], gate: asyncio.Event | None = None) -> Service:
    svc = Service("Shop")

    def refund(cents: int) -> str:
        refunds.append(cents)
        return f"refunded {cents}"

    @svc.handler()
    async def buy(ctx: Context) -> str:
        """Charge, then wait for the warehouse; compensate if cancelled meanwhile."""
        charged = await ctx.run("charge", lambda: 500)
        try:
            await ctx.service_call("Warehouse", "reserve", "book")
        except TerminalError as exc:
            undone = await ctx.run("refund", refund, charged)
            return f"{undone} after {exc.code} {exc.message}"
        return "bought"

    @svc.handler()
    async def buy_then_wait(ctx: Context) -> str:
        """As buy, but the compensation waits too (for the payment provider's confirmation)."""
        await ctx.run("charge", lambda: 500)
        try:
            await ctx.service_call("Warehouse", "reserve", "book")
        except TerminalError:
            return await ctx.service_call("Payments", "refund", 500)
        return "bought"

    @svc.handler()
    async def stubborn(ctx: Context) -> str:
        try:
            await ctx.sleep(60)
        except TerminalError:
            pass  # swallows the cancellation
        await ctx.sleep(1)  # once: this one is not cancelled
        return "finished anyway"

    @svc.handler()
    async def unprepared(ctx: Context) -> None:
        await ctx.sleep(60)

    @svc.handler()
    async def busy(ctx: Context) -> list[Any]:
        assert gate is not None
        await gate.wait()  # not a context await: the cancellation waits for the next one
        try:
            await ctx.run("never", refund, 1)
        except TerminalError as exc:
            return [exc.code, await ctx.run("after", lambda: "ran")]
        return ["not cancelled"]

    return svc


async def ack_run(sidecar: FakeSidecar, inv: str) -> Command:
    run = await sidecar.command(inv)
    assert isinstance(run.entry, Run)
    await sidecar.ack(inv, run.index)
    return run


async def test_a_cancellation_raises_at_the_pending_await_and_compensation_runs(connect: Connect) -> None:
    refunds: list[int] = []
    sidecar = await connect(shop(refunds), suspend_after=NEVER)
    inv = await sidecar.start("Shop", "buy", key=None)
    await ack_run(sidecar, inv)
    assert isinstance((await sidecar.command(inv)).entry, Call)
    await sidecar.barrier()
    assert sidecar.idle(inv)  # waiting for the warehouse

    await sidecar.cancel(inv)
    assert await sidecar.next(inv) == Command(invocation_id=inv, index=3, entry=CANCELLED)
    refund = await ack_run(sidecar, inv)
    assert refund.index == 4 and refund.entry == Run(name="refund", value=b'"refunded 500"')
    entries, end = await sidecar.finish(inv)
    assert entries == [] and end.output == b'"refunded 500 after 409 cancelled"' and refunds == [500]

    # A completion of the cancelled call, arriving later, changes nothing.
    await sidecar.complete(inv, 2, value=b'"reserved"')
    await sidecar.barrier()
    assert sidecar.idle(inv)


async def test_a_start_followed_at_once_by_cancel_behaves_the_same(connect: Connect) -> None:
    refunds: list[int] = []
    sidecar = await connect(shop(refunds), suspend_after=NEVER)
    journal: list[Entry] = [Run(name="charge", value=b"500"), Call(service="Warehouse", handler="reserve",
                                                                   input=b'"book"')]
    inv = await sidecar.start("Shop", "buy", key=None, journal=journal)
    await sidecar.cancel(inv)  # the recorded steps replay; the cancellation surfaces after them
    assert await sidecar.next(inv) == Command(invocation_id=inv, index=3, entry=CANCELLED)
    assert (await ack_run(sidecar, inv)).entry == Run(name="refund", value=b'"refunded 500"')
    entries, end = await sidecar.finish(inv)
    assert entries == [] and end.output == b'"refunded 500 after 409 cancelled"' and refunds == [500]


async def test_a_later_attempt_replays_the_cancellation_where_it_surfaced(connect: Connect) -> None:
    sidecar = await connect(shop([]), suspend_after=0.2)
    inv = await sidecar.start("Shop", "buy_then_wait", key=None)
    charge = await ack_run(sidecar, inv)
    reserve = await sidecar.command(inv)
    await sidecar.cancel(inv)
    marker = await sidecar.command(inv)
    refund = await sidecar.command(inv)  # the compensation waits for another call ...
    assert (marker.entry, refund.entry) == (CANCELLED, Call(service="Payments", handler="refund", input=b"500"))
    assert (await sidecar.next(inv)).waiting_on == [4]  # type: ignore[union-attr]  # ... and suspends

    # Meanwhile the reservation returned after all, and the refund too; the sidecar starts a new
    # attempt and repeats the Cancel behind it. The recorded cancellation, not the reservation's
    # late success, decides the path: the compensation replays, nothing is raised twice.
    done_reserve = msgspec.structs.replace(reserve.entry, done=True, value=b'"reserved"')
    done_refund = msgspec.structs.replace(refund.entry, done=True, value=b'"refund confirmed"')
    journal = [charge.entry, done_reserve, marker.entry, done_refund]
    again = await sidecar.start("Shop", "buy_then_wait", key=None, journal=journal, invocation_id=inv, attempt=2)
    await sidecar.cancel(again)
    entries, end = await sidecar.finish(again)
    assert entries == [] and end.output == b'"refund confirmed"'

    # Without the Cancel (it may come late): the same.
    again = await sidecar.start("Shop", "buy_then_wait", key=None, journal=journal, invocation_id=inv, attempt=3)
    entries, end = await sidecar.finish(again)
    assert entries == [] and end.output == b'"refund confirmed"'


async def test_a_cancellation_recorded_at_a_sleep_surfaces_there_on_replay(connect: Connect) -> None:
    sidecar = await connect(shop([]))
    journal: list[Entry] = [Sleep(wake_at_ms=2**41), CANCELLED]  # the sleep is far from over
    inv = await sidecar.start("Shop", "stubborn", key=None, journal=journal)
    await sidecar.cancel(inv)
    second_sleep = await sidecar.command(inv)  # not a suspension on the first sleep
    assert second_sleep.index == 3 and isinstance(second_sleep.entry, Sleep)


async def test_a_cancellation_surfaces_once_and_a_swallowed_one_ends_as_usual(connect: Connect) -> None:
    sidecar = await connect(shop([]), suspend_after=NEVER)
    inv = await sidecar.start("Shop", "stubborn", key=None)
    assert isinstance((await sidecar.command(inv)).entry, Sleep)
    await sidecar.cancel(inv)
    assert (await sidecar.command(inv)).entry == CANCELLED
    second = await sidecar.command(inv)
    assert isinstance(second.entry, Sleep)
    await sidecar.cancel(inv)  # repeated: already surfaced
    await sidecar.barrier()
    assert sidecar.idle(inv)
    await sidecar.complete(inv, second.index)
    assert (await sidecar.finish(inv))[1] == End(invocation_id=inv, output=b'"finished anyway"')


async def test_an_unhandled_cancellation_fails_the_invocation_with_409(connect: Connect) -> None:
    sidecar = await connect(shop([]), suspend_after=NEVER)
    inv = await sidecar.start("Shop", "unprepared", key=None)
    await sidecar.command(inv)
    await sidecar.cancel(inv)
    entries, end = await sidecar.finish(inv)
    assert entries == [CANCELLED]
    assert end.failure == Failure(code=409, message="cancelled", terminal=True)


async def test_a_cancellation_outside_a_context_await_surfaces_at_the_next_one(connect: Connect) -> None:
    refunds: list[int] = []
    gate = asyncio.Event()
    sidecar = await connect(shop(refunds, gate), suspend_after=NEVER)
    inv = await sidecar.start("Shop", "busy", key=None)
    await sidecar.cancel(inv)
    await sidecar.barrier()
    gate.set()
    assert (await sidecar.command(inv)).entry == CANCELLED  # the step did not run ...
    assert (await ack_run(sidecar, inv)).entry == Run(name="after", value=b'"ran"')  # ... this one did
    entries, end = await sidecar.finish(inv)
    assert entries == [] and end.output == b'[409,"ran"]' and refunds == []


async def test_a_step_executing_when_cancelled_finishes_and_returns(connect: Connect) -> None:
    svc = Service("Charger")
    entered, release = asyncio.Event(), asyncio.Event()

    async def charge() -> int:
        entered.set()
        await release.wait()
        return 500

    @svc.handler()
    async def pay(ctx: Context) -> str:
        cents = await ctx.run("charge", charge)
        try:
            await ctx.sleep(10)
        except TerminalError:
            return await ctx.run("refund", lambda: f"refunded {cents}")
        return "paid"

    sidecar = await connect(svc, suspend_after=NEVER)
    inv = await sidecar.start("Charger", "pay", key=None)
    await asyncio.wait_for(entered.wait(), DEADLINE)
    await sidecar.cancel(inv)
    await sidecar.barrier()
    release.set()
    assert (await ack_run(sidecar, inv)).entry == Run(name="charge", value=b"500")
    assert (await sidecar.command(inv)).entry == CANCELLED  # raised at the sleep, before it was journaled
    assert (await ack_run(sidecar, inv)).entry == Run(name="refund", value=b'"refunded 500"')
    assert (await sidecar.finish(inv))[1].output == b'"refunded 500"'


async def test_of_several_pending_awaits_only_the_oldest_raises(connect: Connect) -> None:
    svc = Service("Pair")

    @svc.handler()
    async def pair(ctx: Context) -> list[str]:
        first = ctx.service_call("S", "first")
        second = ctx.service_call("S", "second")
        results = await asyncio.gather(first, second, return_exceptions=True)
        return [repr(result) for result in results]

    sidecar = await connect(svc, suspend_after=NEVER)
    inv = await sidecar.start("Pair", "pair", key=None)
    await sidecar.command(inv)
    await sidecar.command(inv)
    await sidecar.cancel(inv)
    assert (await sidecar.command(inv)).entry == CANCELLED
    await sidecar.barrier()
    assert sidecar.idle(inv)  # the second call is still awaited
    await sidecar.complete(inv, 2, value=b'"two"')
    output = msgspec.json.decode((await sidecar.finish(inv))[1].output or b"")
    assert output == ["TerminalError('cancelled', code=409)", "'two'"]

    # Replayed with the second call done, the same await raises.
    journal: list[Entry] = [Call(service="S", handler="first"), Call(service="S", handler="second", done=True,
                                                                    value=b'"two"'), CANCELLED]
    entries, end = await sidecar.finish(await sidecar.start("Pair", "pair", key=None, journal=journal))
    assert entries == [] and msgspec.json.decode(end.output or b"") == output


async def test_a_cancel_for_an_invocation_not_running_here_is_ignored(connect: Connect) -> None:
    sidecar = await connect()
    await sidecar.cancel("inv_elsewhere")
    await sidecar.barrier()


async def test_the_cancelled_step_name_is_reserved(connect: Connect) -> None:
    svc = Service("Reserved")

    @svc.handler()
    async def sneaky(ctx: Context) -> str:
        try:
            await ctx.run("<cancelled>", lambda: 1)
        except ValueError as exc:
            return str(exc)
        return "accepted"

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("Reserved", "sneaky", key=None))
    assert entries == [] and b"reserved" in (end.output or b"")


# --- step timeouts ------------------------------------------------------------------------------


async def test_a_timed_out_async_step_is_cancelled_retried_then_journaled_as_failed(connect: Connect) -> None:
    svc = Service("Timeouts")
    tries: list[str] = []

    async def sometimes_hangs() -> str:
        tries.append("try")
        try:
            if tries.count("try") < 3:
                await asyncio.Event().wait()
            return "answered"
        except asyncio.CancelledError:
            tries.append("cancelled")
            raise

    async def always_hangs() -> None:
        await asyncio.Event().wait()

    @svc.handler()
    async def patient(ctx: Context) -> str:
        return await ctx.run("flaky", sometimes_hangs, timeout=0.01, retry=FAST)

    @svc.handler()
    async def gives_up(ctx: Context) -> str:
        try:
            await ctx.run("stuck", always_hangs, timeout=0.01, retry=FAST)
        except TerminalError as exc:
            return f"{exc.code}: {exc.message}"
        return "?"

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("Timeouts", "patient", key=None))
    assert entries == [Run(name="flaky", value=b'"answered"', attempts=3)] and end.output == b'"answered"'
    assert tries == ["try", "cancelled", "try", "cancelled", "try"]

    inv = await sidecar.start("Timeouts", "gives_up", key=None)
    entries, end = await sidecar.finish(inv)
    [run] = entries
    assert isinstance(run, Run) and run.failure is not None and run.failure.terminal
    assert run.failure.message == "step 'stuck' failed after 3 attempts: TimeoutError: step 'stuck' timed out after 0.01 s"
    assert end.output == f'"500: {run.failure.message}"'.encode()


async def test_a_timed_out_sync_step_stops_being_waited_for(connect: Connect) -> None:
    svc = Service("Threads")
    release = threading.Event()
    started: list[int] = []

    def blocks() -> str:
        started.append(1)
        release.wait(DEADLINE)  # a thread cannot be killed: it runs on once the step gave up
        return "late"

    @svc.handler()
    async def block(ctx: Context) -> str:
        try:
            return await ctx.run("blocking", blocks, timeout=0.01, retry=RetryPolicy(max_attempts=2,
                                                                                   initial_interval=0.001))
        except TerminalError as exc:
            return exc.message

    sidecar = await connect(svc)
    try:
        entries, end = await sidecar.finish(await sidecar.start("Threads", "block", key=None))
    finally:
        release.set()  # let the abandoned threads end before the loop's executor shuts down
    assert len(started) == 2 and len(entries) == 1
    assert end.output is not None and b"TimeoutError: step 'blocking' timed out after 0.01 s" in end.output


async def test_a_timeout_error_raised_by_the_step_itself_keeps_its_message(connect: Connect) -> None:
    svc = Service("OwnTimeout")

    async def own() -> None:
        raise TimeoutError("the API said so")

    @svc.handler()
    async def call(ctx: Context) -> str:
        try:
            await ctx.run("api", own, timeout=30, retry=RetryPolicy(max_attempts=1))
        except TerminalError as exc:
            return exc.message
        return "?"

    sidecar = await connect(svc)
    _, end = await sidecar.finish(await sidecar.start("OwnTimeout", "call", key=None))
    assert end.output == b"\"step 'api' failed after 1 attempts: TimeoutError: the API said so\""


async def test_bad_step_timeouts_claim_no_index(connect: Connect) -> None:
    svc = Service("BadTimeout")

    @svc.handler()
    async def bad(ctx: Context) -> list[str]:
        refused = []
        for timeout in (0, -1, math.nan, math.inf):
            try:
                await ctx.run("x", lambda: 1, timeout=timeout)
            except ValueError:
                refused.append(str(timeout))
        await ctx.run("y", lambda: 2)
        return refused

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("BadTimeout", "bad", key=None))
    assert entries == [Run(name="y", value=b"2")] and end.output == b'["0","-1","nan","inf"]'
