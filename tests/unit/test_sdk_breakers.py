"""A step naming a circuit breaker, on the SDK's side of the socket: leave is asked only without
a lease, so a closed breaker costs no round trip; every try is reported without waiting."""

from __future__ import annotations

import asyncio

import pytest

from handler_sdk import CircuitBreaker, Context, RetryPolicy, Service
from handler_sdk._gates import Gates, StepGate
from handler_sdk.protocol import (
    AskLeave, BreakerSpec, Command, End, Leave, Revoke, Run, StepReport, ToSidecar, encoder,
)
from tests.unit.fake_sidecar import Connect, FakeSidecar

llm = CircuitBreaker("llm_unit", failure_threshold=2, cool_down=5.0)
gated = Service("Gated")


@gated.handler()
async def twice(ctx: Context) -> str:
    first = await ctx.run("first", lambda: "a", breaker=llm)
    second = await ctx.run("second", lambda: "b", breaker="llm_unit")
    return first + second


@gated.handler()
async def flaky(ctx: Context) -> str:
    def fail() -> str:
        raise ConnectionError("down")
    return await ctx.run("call", fail, breaker=llm, retry=RetryPolicy(max_attempts=3, initial_interval=0.001))


calls: list[str] = []


async def _premium() -> str:
    calls.append("premium")
    raise ConnectionError("premium is down")


async def _cheap() -> str:
    calls.append("cheap")
    return "cheap answer"


@gated.handler()
async def with_fallback(ctx: Context) -> str:
    return await ctx.run("ask", _premium, breaker=llm, fallback=_cheap, fallback_after=2,
                         retry=RetryPolicy(max_attempts=4, initial_interval=0.001))


async def _leave(sidecar: FakeSidecar, inv: str, index: int, **answer: object) -> None:
    await sidecar.ws.send_bytes(encoder.encode(Leave(inv, index, **answer)))  # type: ignore[arg-type]


async def _until_end(sidecar: FakeSidecar, inv: str) -> list[ToSidecar]:
    """Every message of ``inv`` up to its End, acking each Run as the sidecar would."""
    seen: list[ToSidecar] = []
    while True:
        message = await sidecar.next(inv)
        seen.append(message)
        if type(message) is End:
            return seen
        if type(message) is Command and type(message.entry) is Run:
            await sidecar.ack(inv, message.index)


def _kinds(messages: list[ToSidecar]) -> list[str]:
    return [type(m).__name__ for m in messages]


async def test_a_closed_breaker_costs_one_ask_per_link_and_no_round_trip_after(connect: Connect) -> None:
    sidecar = await connect(gated)
    inv = await sidecar.start("Gated", "twice", key=None)
    ask = await sidecar.next(inv)
    assert ask == AskLeave(inv, 1, breaker=BreakerSpec("llm_unit", 2, 5000))
    await _leave(sidecar, inv, 1, lease=True)
    rest = await _until_end(sidecar, inv)
    # The second step names the same breaker: the lease covers it, nothing is asked.
    assert _kinds(rest) == ["StepReport", "Command", "StepReport", "Command", "End"]
    assert all(not m.failed for m in rest if type(m) is StepReport)
    again = await sidecar.start("Gated", "twice", key=None)  # another invocation on the same link
    assert _kinds(await _until_end(sidecar, again)) == ["StepReport", "Command", "StepReport", "Command", "End"]

    await sidecar.ws.send_bytes(encoder.encode(Revoke("", "llm_unit")))  # the breaker opened
    await sidecar.barrier()
    third = await sidecar.start("Gated", "twice", key=None)
    assert type(await sidecar.next(third)) is AskLeave  # no lease any more: it asks again
    await _leave(sidecar, third, 1)  # granted, without a lease (a half-open trial)
    assert _kinds([await sidecar.next(third), await sidecar.next(third)]) == ["StepReport", "Command"]
    await sidecar.ack(third, 1)
    assert type(await sidecar.next(third)) is AskLeave


async def test_every_failed_try_is_reported_without_waiting(connect: Connect) -> None:
    sidecar = await connect(gated)
    inv = await sidecar.start("Gated", "flaky", key=None)
    assert type(await sidecar.next(inv)) is AskLeave
    await _leave(sidecar, inv, 1, lease=True)
    seen = await _until_end(sidecar, inv)
    assert _kinds(seen) == ["StepReport"] * 3 + ["Command", "End"]
    assert all(m.failed for m in seen if type(m) is StepReport)


async def test_the_fallback_hook_says_whether_the_breaker_is_open_for_this_step() -> None:
    sent: list[ToSidecar] = []
    gates = Gates(sent.append)
    spec = BreakerSpec("vendor")
    gate = StepGate(gates, "inv_1", 3, spec, fallback=True)
    admitted = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0)
    assert sent == [AskLeave("inv_1", 3, breaker=spec, fallback=True)]
    gates.answered(Leave("inv_1", 3, granted=False, open_until_ms=123))
    assert await admitted is False
    granted = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0)
    gates.answered(Leave("inv_1", 3, lease=True))
    assert await granted is True
    assert await gate.admit() is True and len(sent) == 2  # leased: no third ask


async def test_an_open_breaker_sends_the_step_to_its_fallback_at_once(connect: Connect) -> None:
    calls.clear()
    sidecar = await connect(gated)
    inv = await sidecar.start("Gated", "with_fallback", key=None)
    assert await sidecar.next(inv) == AskLeave(inv, 1, breaker=BreakerSpec("llm_unit", 2, 5000), fallback=True)
    await _leave(sidecar, inv, 1, granted=False, open_until_ms=1)  # open: the function is not run
    seen = await _until_end(sidecar, inv)
    assert calls == ["cheap"] and _kinds(seen) == ["Command", "End"]  # nothing reported for the fallback
    [run] = [m.entry for m in seen if type(m) is Command]
    assert isinstance(run, Run) and (run.variant, run.attempts, run.value) == ("fallback", 1, b'"cheap answer"')


async def test_only_tries_of_the_function_count_for_its_breaker(connect: Connect) -> None:
    calls.clear()
    sidecar = await connect(gated)
    inv = await sidecar.start("Gated", "with_fallback", key=None)
    assert type(await sidecar.next(inv)) is AskLeave
    await _leave(sidecar, inv, 1, lease=True)
    seen = await _until_end(sidecar, inv)
    assert calls == ["premium", "premium", "cheap"]
    assert [m.failed for m in seen if type(m) is StepReport] == [True, True]  # the fallback's try is not reported


def test_a_breaker_is_declared_with_sane_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("b", failure_threshold=0)
    with pytest.raises(ValueError, match="cool_down"):
        CircuitBreaker("b", cool_down=0)
    with pytest.raises(ValueError, match="breaker name"):
        CircuitBreaker("not a name")
    assert repr(llm) == "CircuitBreaker('llm_unit', failure_threshold=2, cool_down=5)"
