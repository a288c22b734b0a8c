"""Identifiers over the limit are refused where the handler names them: a ``TerminalError(400)``
that names the identifier and the limit, before anything is journaled; ones at the limit go out
as usual. Driven through the real app with the fake sidecar."""

from typing import Any

import msgspec
import pytest

from handler_sdk import ObjectContext, TerminalError, VirtualObject, Workflow, WorkflowContext
from handler_sdk.protocol import (
    MAX_IDENTIFIER_BYTES, ClearState, CompleteAwakeable, CompletePromise, GetState, Send, SetState,
)
from tests.unit.fake_sidecar import Connect

AT_LIMIT = "é" * (MAX_IDENTIFIER_BYTES // 2)
OVER = AT_LIMIT + "x"


def ids() -> VirtualObject:
    obj = VirtualObject("Ids")

    @obj.handler()
    async def use(ctx: ObjectContext, request: list[str]) -> str:
        op, identifier = request
        try:
            if op == "set":
                ctx.set(identifier, 1)
            elif op == "get":
                await ctx.get(identifier)
            elif op == "clear":
                ctx.clear(identifier)
            elif op == "send":
                ctx.object_send("Counter", identifier, "add", 1)
            elif op == "call":
                await ctx.object_call("Counter", identifier, "add", 1)
            elif op == "resolve":
                ctx.resolve_awakeable(identifier, 1)
        except TerminalError as exc:
            return f"{exc.code}: {exc.message}"
        return "ok"

    return obj


def flow() -> Workflow:
    wf = Workflow("Flow")

    @wf.main()
    async def run(ctx: WorkflowContext, name: str) -> str:
        try:
            await ctx.promise(name).resolve(1)
        except TerminalError as exc:
            return f"{exc.code}: {exc.message}"
        return "ok"

    return wf


@pytest.mark.parametrize("op, what", [
    ("set", "state name"), ("get", "state name"), ("clear", "state name"), ("send", "object key"),
    ("call", "object key"), ("resolve", "awakeable ID"),
])
async def test_an_identifier_over_the_limit_is_a_terminal_400_and_journals_nothing(
    connect: Connect, op: str, what: str,
) -> None:
    sidecar = await connect(ids())
    inv = await sidecar.start("Ids", "use", msgspec.json.encode([op, OVER]))
    entries, end = await sidecar.finish(inv)
    assert entries == []
    message = msgspec.json.decode(end.output or b"")
    assert message.startswith(f"400: {what} is {MAX_IDENTIFIER_BYTES + 1} bytes long")
    assert str(MAX_IDENTIFIER_BYTES) in message


async def test_a_promise_name_over_the_limit_is_refused_too(connect: Connect) -> None:
    sidecar = await connect(flow())
    inv = await sidecar.start("Flow", "run", msgspec.json.encode(OVER))
    entries, end = await sidecar.finish(inv)
    assert entries == [] and msgspec.json.decode(end.output or b"").startswith("400: promise name is")


@pytest.mark.parametrize("op, entry", [
    ("set", SetState(name=AT_LIMIT, value=b"1")), ("get", GetState(name=AT_LIMIT)),
    ("clear", ClearState(name=AT_LIMIT)), ("send", Send(service="Counter", handler="add", key=AT_LIMIT, input=b"1")),
    ("resolve", CompleteAwakeable(id=AT_LIMIT, value=b"1")),
])
async def test_identifiers_at_the_limit_are_journaled(connect: Connect, op: str, entry: Any) -> None:
    sidecar = await connect(ids())
    inv = await sidecar.start("Ids", "use", msgspec.json.encode([op, AT_LIMIT]))
    entries, end = await sidecar.finish(inv)
    assert entries == [entry] and end.output == b'"ok"'


async def test_a_promise_name_at_the_limit_is_journaled(connect: Connect) -> None:
    sidecar = await connect(flow())
    inv = await sidecar.start("Flow", "run", msgspec.json.encode(AT_LIMIT))
    command = await sidecar.command(inv)
    assert command.entry == CompletePromise(name=AT_LIMIT, value=b"1")
