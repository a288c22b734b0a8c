"""Workflows and their durable promises, driven through the real app with the fake sidecar.

The sidecar owns the promises; here the test plays it: it completes ``GetPromise`` when the
promise is resolved, ``PeekPromise`` at once, and ``CompletePromise`` with its verdict (nothing
for "it took", a 409 failure for "already completed").
"""

import asyncio
import math
from typing import Any

import msgspec

from handler_sdk import (
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from handler_sdk.protocol import (
    CompletePromise,
    Entry,
    Failure,
    GetPromise,
    GetState,
    PeekPromise,
    SetState,
    Suspend,
)
from tests.unit.fake_sidecar import Connect

NEVER = math.inf


class Approval(msgspec.Struct):
    by: str
    ok: bool


def signup(seen: dict[str, Any] | None = None) -> Workflow:
    wf = Workflow("Signup")

    @wf.main()
    async def run(ctx: WorkflowContext, email: str) -> list[Any]:
        if seen is not None:
            seen["main"] = ctx
        ctx.set("email", email)
        approval = ctx.promise("approval", type=Approval)
        try:
            got = await approval.value()
        except TerminalError as exc:
            return ["rejected", exc.code, exc.message]
        return [type(got).__name__, got.by, got.ok]

    @wf.handler()
    async def approve(ctx: WorkflowSharedContext, by: str) -> str:
        if seen is not None:
            seen["shared"] = ctx
        try:
            await ctx.promise("approval").resolve({"by": by, "ok": True})
        except TerminalError as exc:
            return f"too late: {exc.code} {exc.message}"
        return "approved"

    @wf.handler()
    async def deny(ctx: WorkflowSharedContext, reason: str) -> str:
        await ctx.promise("approval").reject(reason, code=403)
        return "denied"

    @wf.handler()
    async def status(ctx: WorkflowSharedContext) -> Any:
        return [await ctx.get("email"), await ctx.promise("approval", type=Approval).peek()]

    return wf


async def test_workflow_contexts_read_write_and_reach_promises(connect: Connect) -> None:
    seen: dict[str, Any] = {}
    obj = VirtualObject("Plain")

    @obj.handler()
    async def write(ctx: ObjectContext) -> bool:
        return hasattr(ctx, "promise")

    @obj.handler(kind="shared")
    async def read(ctx: ObjectSharedContext) -> bool:
        return hasattr(ctx, "promise")

    sidecar = await connect(signup(seen), obj, suspend_after=NEVER)
    inv = await sidecar.start("Signup", "run", b'"a@b.c"', key="a@b.c")
    assert (await sidecar.command(inv)).entry == SetState(name="email", value=b'"a@b.c"')
    assert (await sidecar.command(inv)).entry == GetPromise(name="approval")
    main = seen["main"]
    assert isinstance(main, WorkflowContext) and isinstance(main, ObjectContext) and main.key == "a@b.c"

    shared_inv = await sidecar.start("Signup", "approve", b'"ops"', key="a@b.c")
    assert (await sidecar.command(shared_inv)).entry == CompletePromise(
        name="approval", value=b'{"by":"ops","ok":true}')
    shared = seen["shared"]
    assert isinstance(shared, WorkflowSharedContext) and not isinstance(shared, ObjectContext)
    assert not hasattr(shared, "set")
    await sidecar.complete(shared_inv, 1)  # the resolution took
    assert (await sidecar.finish(shared_inv))[1].output == b'"approved"'

    await sidecar.complete(inv, 2, value=b'{"by":"ops","ok":true}')  # the sidecar wakes the waiter
    assert msgspec.json.decode((await sidecar.finish(inv))[1].output or b"") == ["Approval", "ops", True]

    for handler in ("write", "read"):  # promises are a workflow's: objects do not have them
        assert (await sidecar.finish(await sidecar.start("Plain", handler)))[1].output == b"false"


async def test_a_rejected_promise_raises_terminal_error_in_its_awaiter(connect: Connect) -> None:
    sidecar = await connect(signup(), suspend_after=NEVER)
    deny = await sidecar.start("Signup", "deny", b'"no budget"', key="k")
    entry = (await sidecar.command(deny)).entry
    assert entry == CompletePromise(name="approval", failure=Failure(code=403, message="no budget"))
    await sidecar.complete(deny, 1)
    assert (await sidecar.finish(deny))[1].output == b'"denied"'

    inv = await sidecar.start("Signup", "run", b'"x"', key="k")
    await sidecar.command(inv)
    await sidecar.command(inv)
    await sidecar.complete(inv, 2, failure=Failure(code=403, message="no budget"))
    assert msgspec.json.decode((await sidecar.finish(inv))[1].output or b"") == ["rejected", 403, "no budget"]


async def test_a_second_completion_is_refused_with_409(connect: Connect) -> None:
    sidecar = await connect(signup(), suspend_after=NEVER)
    inv = await sidecar.start("Signup", "approve", b'"late"', key="k")
    await sidecar.command(inv)
    await sidecar.complete(inv, 1, failure=Failure(code=409, message="promise 'approval' was already completed"))
    end = (await sidecar.finish(inv))[1]
    assert end.output == b"\"too late: 409 promise 'approval' was already completed\""

    # On replay the recorded verdict is raised again, without waiting.
    journal: list[Entry] = [CompletePromise(
        name="approval", value=b'{"by":"late","ok":true}', done=True, outcome=Failure(409, "already"))]
    entries, end = await sidecar.finish(await sidecar.start("Signup", "approve", b'"late"', key="k", journal=journal))
    assert entries == [] and end.output == b'"too late: 409 already"'


async def test_peek_answers_at_once_with_the_value_or_none(connect: Connect) -> None:
    sidecar = await connect(signup(), suspend_after=NEVER)
    for value, failure, expected in [
        (None, None, [None, None]),  # not resolved yet
        (b'{"by":"me","ok":false}', None, [None, {"by": "me", "ok": False}]),
    ]:
        inv = await sidecar.start("Signup", "status", key="k")
        assert (await sidecar.command(inv)).entry == GetState(name="email")
        assert (await sidecar.command(inv)).entry == PeekPromise(name="approval")
        await sidecar.complete(inv, 2, value=value, failure=failure)
        assert msgspec.json.decode((await sidecar.finish(inv))[1].output or b"") == expected

    inv = await sidecar.start("Signup", "status", key="k")
    await sidecar.command(inv)
    await sidecar.command(inv)
    await sidecar.complete(inv, 2, failure=Failure(code=451, message="rejected"))
    assert (await sidecar.finish(inv))[1].failure == Failure(code=451, message="rejected")

    journal: list[Entry] = [GetState(name="email", value=b'"e"'), PeekPromise(name="approval", done=True)]
    entries, end = await sidecar.finish(await sidecar.start("Signup", "status", key="k", journal=journal))
    assert entries == [] and end.output == b'["e",null]'


async def test_a_workflow_awaiting_a_promise_suspends_and_replays_it(connect: Connect) -> None:
    sidecar = await connect(signup(), suspend_after=0.2)
    inv = await sidecar.start("Signup", "run", b'"x"', key="k")
    journal = [(await sidecar.command(inv)).entry, (await sidecar.command(inv)).entry]
    assert await sidecar.next(inv) == Suspend(invocation_id=inv, waiting_on=[2])

    done = [journal[0], GetPromise(name="approval", done=True, value=b'{"by":"b","ok":true}')]
    entries, end = await sidecar.finish(await sidecar.start(
        "Signup", "run", b'"x"', key="k", journal=done, invocation_id=inv, attempt=2))
    assert entries == [] and msgspec.json.decode(end.output or b"") == ["Approval", "b", True]


async def test_promise_operations_are_journaled_when_called_and_may_go_unawaited(connect: Connect) -> None:
    wf = Workflow("Eager")

    @wf.main()
    async def run(ctx: WorkflowContext) -> list[str]:
        p: DurablePromise[int] = ctx.promise("n", type=int)
        ctx.promise("other").resolve("fire and forget")  # journaled even though never awaited
        pending = p.value()
        await ctx.promise("other").reject("second")  # refused: the first completion stands
        return [repr(p), p.name, str(await pending), repr(pending)]

    sidecar = await connect(wf, suspend_after=NEVER)
    inv = await sidecar.start("Eager", "run", key="k")
    assert (await sidecar.command(inv)).entry == CompletePromise(name="other", value=b'"fire and forget"')
    assert (await sidecar.command(inv)).entry == GetPromise(name="n")
    rejected = await sidecar.command(inv)
    assert rejected.entry == CompletePromise(name="other", failure=Failure(code=500, message="second"))
    await sidecar.complete(inv, 1)
    await sidecar.complete(inv, 3, failure=Failure(code=409, message="already completed"))
    end = (await sidecar.finish(inv))[1]
    assert end.failure == Failure(code=409, message="already completed")

    journal: list[Entry] = [
        CompletePromise(name="other", value=b'"fire and forget"', done=True),
        GetPromise(name="n", done=True, value=b"7"),
        CompletePromise(name="other", failure=Failure(code=500, message="second"), done=True),
    ]
    entries, end = await sidecar.finish(await sidecar.start("Eager", "run", key="k", journal=journal))
    assert entries == []
    assert msgspec.json.decode(end.output or b"") == [
        "<DurablePromise 'n'>", "n", "7", "<GetPromise future, journal entry 2>"]


async def test_two_awaits_of_one_promise_value_share_its_outcome(connect: Connect) -> None:
    wf = Workflow("Twice")

    @wf.main()
    async def run(ctx: WorkflowContext) -> list[Any]:
        value = ctx.promise("p").value()
        return list(await asyncio.gather(value, value))

    sidecar = await connect(wf, suspend_after=NEVER)
    inv = await sidecar.start("Twice", "run", key="k")
    await sidecar.command(inv)
    await sidecar.complete(inv, 1, value=b'"v"')
    assert (await sidecar.finish(inv))[1].output == b'["v","v"]'
