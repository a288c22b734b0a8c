"""Calls and sends between handlers, driven through the real app with the fake sidecar.

A call is a completable entry like a timer: journaled when the handler makes it, completed by the
sidecar with the callee's outcome. The same rules as the other SDK tests: deadlines on every wait,
barriers to show that something did not happen.
"""

import asyncio
import datetime
import math
from typing import Any

import msgspec
import pytest

from handler_sdk import (
    Context,
    ObjectContext,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
)
from handler_sdk.protocol import Call, Command, Entry, Failure, Send, Suspend
from tests.unit.fake_sidecar import Connect, FakeSidecar

NEVER = math.inf


class Greeting(msgspec.Struct):
    text: str
    n: int


# Callees: never served in these tests, only named (a handler service calls handlers elsewhere).
greeter = Service("Greeter")


@greeter.handler("hello")
async def greet(ctx: Context, name: str) -> Greeting:
    return Greeting(f"hello {name}", 1)


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    return n


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    return email


def caller() -> Service:
    svc = Service("Caller")

    @svc.handler()
    async def by_name(ctx: Context, who: str) -> list[Any]:
        got = await ctx.service_call("Greeter", "hello", who, type=Greeting)
        return [type(got).__name__, got.text, got.n]

    @svc.handler()
    async def untyped(ctx: Context) -> Any:
        return await ctx.object_call("Counter", "k1", "add", 5)

    @svc.handler()
    async def careful(ctx: Context) -> str:
        try:
            await ctx.service_call(greeter, greet, "eve")
        except TerminalError as exc:
            return f"callee failed {exc.code}: {exc.message}"
        return "ok"

    @svc.handler()
    async def strict(ctx: Context) -> Any:
        return await ctx.service_call(greeter, "hello", "eve")

    @svc.handler()
    async def fan_out(ctx: Context) -> list[Any]:
        first = ctx.object_call(counter, "a", add, 1)
        second = ctx.object_call(counter, "b", add, 2)
        return list(await asyncio.gather(first, second))

    return svc


async def test_a_call_is_journaled_and_continues_on_completion_with_the_decoded_value(connect: Connect) -> None:
    sidecar = await connect(caller(), suspend_after=NEVER)
    inv = await sidecar.start("Caller", "by_name", b'"bob"', key=None)
    call = await sidecar.command(inv)
    assert call.index == 1
    assert call.entry == Call(service="Greeter", handler="hello", key=None, input=b'"bob"')
    await sidecar.barrier()
    assert sidecar.idle(inv)  # it waits for the callee

    await sidecar.complete(inv, 1, value=b'{"text":"hi bob","n":3}')
    entries, end = await sidecar.finish(inv)
    assert entries == [] and msgspec.json.decode(end.output or b"") == ["Greeting", "hi bob", 3]

    inv = await sidecar.start("Caller", "untyped", key=None)
    assert (await sidecar.command(inv)).entry == Call(service="Counter", handler="add", key="k1", input=b"5")
    await sidecar.complete(inv, 1, value=b"[5]")
    assert (await sidecar.finish(inv))[1].output == b"[5]"


async def test_a_callee_failure_raises_terminal_error_with_its_code(connect: Connect) -> None:
    sidecar = await connect(caller(), suspend_after=NEVER)
    inv = await sidecar.start("Caller", "careful", key=None)
    await sidecar.command(inv)
    await sidecar.complete(inv, 1, failure=Failure(code=404, message="no such user"))
    assert (await sidecar.finish(inv))[1].output == b'"callee failed 404: no such user"'

    inv = await sidecar.start("Caller", "strict", key=None)
    await sidecar.command(inv)
    await sidecar.complete(inv, 1, failure=Failure(code=422, message="bad name"))
    end = (await sidecar.finish(inv))[1]
    assert end.failure == Failure(code=422, message="bad name", terminal=True)


async def test_a_replayed_done_call_does_not_wait_and_a_pending_one_does(connect: Connect) -> None:
    sidecar = await connect(caller(), suspend_after=NEVER)
    done: list[Entry] = [Call(service="Greeter", handler="hello", input=b'"bob"', invocation_id="inv_c",
                              done=True, value=b'{"text":"recorded","n":9}')]
    inv = await sidecar.start("Caller", "by_name", b'"bob"', key=None, journal=done)
    entries, end = await sidecar.finish(inv)
    assert entries == [] and msgspec.json.decode(end.output or b"") == ["Greeting", "recorded", 9]

    failed: list[Entry] = [Call(service="Greeter", handler="hello", done=True, failure=Failure(410, "gone"))]
    inv = await sidecar.start("Caller", "careful", key=None, journal=failed)
    assert (await sidecar.finish(inv))[1].output == b'"callee failed 410: gone"'

    pending: list[Entry] = [Call(service="Greeter", handler="hello", input=b'"bob"', invocation_id="inv_c")]
    inv = await sidecar.start("Caller", "by_name", b'"bob"', key=None, journal=pending)
    await sidecar.barrier()
    assert sidecar.idle(inv)  # no new Call: the recorded one is awaited
    await sidecar.complete(inv, 1, value=b'{"text":"late","n":1}')
    assert msgspec.json.decode((await sidecar.finish(inv))[1].output or b"") == ["Greeting", "late", 1]


async def test_calls_started_together_run_in_parallel(connect: Connect) -> None:
    sidecar = await connect(caller(), suspend_after=NEVER)
    inv = await sidecar.start("Caller", "fan_out", key=None)
    first, second = await sidecar.command(inv), await sidecar.command(inv)
    assert first.entry == Call(service="Counter", handler="add", key="a", input=b"1")
    assert second.entry == Call(service="Counter", handler="add", key="b", input=b"2")
    await sidecar.complete(inv, 2, value=b"20")  # the second callee finishes first
    await sidecar.barrier()
    assert sidecar.idle(inv)
    await sidecar.complete(inv, 1, value=b"10")
    assert (await sidecar.finish(inv))[1].output == b"[10,20]"


async def test_a_handler_waiting_only_on_a_call_suspends(connect: Connect) -> None:
    sidecar = await connect(caller(), suspend_after=0.2)
    inv = await sidecar.start("Caller", "by_name", b'"bob"', key=None)
    await sidecar.command(inv)
    assert await sidecar.next(inv) == Suspend(invocation_id=inv, waiting_on=[1])


async def test_targets_may_be_the_decorated_objects_and_functions(connect: Connect) -> None:
    svc = Service("Targets")

    async def not_a_handler(ctx: Context) -> None: ...

    @svc.handler()
    async def targets(ctx: Context) -> list[str]:
        problems = []
        for bad in (
            lambda: ctx.object_call(greeter, "k", greet),  # a service has no keys
            lambda: ctx.service_call(counter, add),  # an object needs one
            lambda: ctx.service_call(greeter, "goodbye"),  # no such handler on it
            lambda: ctx.service_call("Greeter", add),  # add is Counter's
            lambda: ctx.service_call(greeter, not_a_handler),
            lambda: ctx.object_call("Counter", 7, "add"),  # type: ignore[arg-type]
            lambda: ctx.service_call("", "x"),
            lambda: ctx.service_send(greeter, greet, object()),  # not JSON-encodable
        ):
            try:
                bad()
            except (TypeError, ValueError) as exc:  # refused before it claims a journal index
                problems.append(type(exc).__name__)
        ctx.service_call(greeter, greet, "a")
        ctx.service_call("Greeter", greet, "b")
        ctx.object_call(counter, "k", add, 1)
        ctx.object_call("Counter", "k", add)
        ctx.object_call(signup, "me@example.com", run, "me@example.com")
        ctx.object_send(counter, "k", add, 2)
        return problems

    sidecar = await connect(svc, suspend_after=NEVER)
    inv = await sidecar.start("Targets", "targets", key=None)
    entries, end = await sidecar.finish(inv)  # finish() checks that indices stay dense
    assert msgspec.json.decode(end.output or b"") == [
        "TypeError", "TypeError", "ValueError", "ValueError", "ValueError", "TypeError", "TypeError",
        "TypeError"]
    assert [(type(e).__name__, e.service, e.handler, e.key) for e in entries] == [  # type: ignore[union-attr]
        ("Call", "Greeter", "hello", None), ("Call", "Greeter", "hello", None),
        ("Call", "Counter", "add", "k"), ("Call", "Counter", "add", "k"),
        ("Call", "Signup", "run", "me@example.com"), ("Send", "Counter", "add", "k"),
    ]
    assert entries[3] == Call(service="Counter", handler="add", key="k", input=b"")  # no argument


def test_the_decorators_still_return_the_function_unchanged() -> None:
    assert greet.__name__ == "greet" and asyncio.iscoroutinefunction(greet)
    assert greeter.handlers["hello"].fn is greet


async def test_sends_are_journaled_with_their_delay_and_do_not_wait(connect: Connect) -> None:
    svc = Service("Sender")

    @svc.handler()
    async def send(ctx: Context) -> list[Any]:
        return [
            ctx.object_send(counter, "k", add, 1, delay=datetime.timedelta(seconds=2)),
            ctx.service_send("Greeter", "hello", "now"),
            ctx.service_send(greeter, greet, "soon", delay=1.5),
            ctx.object_send("Counter", "k", "add", 3, delay=-4),
        ]

    sidecar = await connect(svc, suspend_after=NEVER)
    inv = await sidecar.start("Sender", "send", key=None)
    entries, end = await sidecar.finish(inv)
    assert entries == [
        Send(service="Counter", handler="add", key="k", input=b"1", delay_ms=2000),
        Send(service="Greeter", handler="hello", input=b'"now"'),
        Send(service="Greeter", handler="hello", input=b'"soon"', delay_ms=1500),
        Send(service="Counter", handler="add", key="k", input=b"3"),  # a past instant is now
    ]
    assert end.output == b"[null,null,null,null]"

    # Replayed: nothing is sent again.
    again, end = await sidecar.finish(await sidecar.start("Sender", "send", key=None, journal=entries))
    assert again == [] and end.output == b"[null,null,null,null]"


@pytest.mark.parametrize("delay", [math.nan, math.inf, 3651 * 86400, datetime.timedelta(days=3651), 1e300])
async def test_a_bad_send_delay_claims_no_index(connect: Connect, delay: float | datetime.timedelta) -> None:
    svc = Service("BadDelay")

    @svc.handler()
    async def send(ctx: Context) -> str:
        try:
            ctx.service_send(greeter, greet, "x", delay=delay)
        except ValueError:
            pass
        ctx.service_send(greeter, greet, "y")
        return "ok"

    sidecar = await connect(svc)
    entries, _ = await sidecar.finish(await sidecar.start("BadDelay", "send", key=None))
    assert entries == [Send(service="Greeter", handler="hello", input=b'"y"')]


async def expect_divergence(sidecar: FakeSidecar, inv: str, index: int, recorded: str, issued: str) -> None:
    entries, end = await sidecar.finish(inv)
    assert entries == [] and end.failure is not None and not end.failure.terminal
    message = end.failure.message
    assert message.startswith("NondeterminismError:")
    assert f"journal entry {index} is {recorded}, but the code issued {issued}." in message


async def test_calling_another_handler_than_recorded_is_a_divergence_naming_both(connect: Connect) -> None:
    sidecar = await connect(caller(), suspend_after=NEVER)
    journal: list[Entry] = [Call(service="Greeter", handler="goodbye", done=True, value=b"1")]
    inv = await sidecar.start("Caller", "by_name", b'"bob"', key=None, journal=journal)
    await expect_divergence(sidecar, inv, 1, "Call 'Greeter/goodbye'", "Call 'Greeter/hello'")

    journal = [Send(service="Greeter", handler="hello")]
    inv = await sidecar.start("Caller", "by_name", b'"bob"', key=None, journal=journal)
    await expect_divergence(sidecar, inv, 1, "Send 'Greeter/hello'", "Call 'Greeter/hello'")


async def test_a_call_from_an_exclusive_object_handler_keeps_command_order(connect: Connect) -> None:
    obj = VirtualObject("Cart")

    @obj.handler()
    async def checkout(ctx: ObjectContext) -> int:
        ctx.set("status", "paying")
        paid = await ctx.service_call("Payments", "charge", {"cents": 500}, type=int)
        ctx.set("status", "paid")
        return paid

    sidecar = await connect(obj, suspend_after=NEVER)
    inv = await sidecar.start("Cart", "checkout")
    await sidecar.command(inv)
    call = await sidecar.command(inv)
    assert call == Command(invocation_id=inv, index=2, entry=Call(
        service="Payments", handler="charge", input=b'{"cents":500}'))
    await sidecar.complete(inv, 2, value=b"500")
    entries, end = await sidecar.finish(inv)
    assert len(entries) == 1 and end.output == b"500"
