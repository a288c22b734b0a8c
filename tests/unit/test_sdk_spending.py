"""What steps cost, budgets that stop spending, retries that respect cost, and fallbacks.

The SDK is driven through its real app with the test playing the sidecar (tests/unit/fake_sidecar.py).
"""

import datetime
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from aiohttp import web

from handler_sdk import (
    BudgetExceeded,
    Context,
    RetryableError,
    RetryPolicy,
    Service,
    TerminalError,
    raise_for_status,
)
from handler_sdk._status import retry_after
from handler_sdk.protocol import End, Failure, Pause, Run
from tests.unit.fake_sidecar import FAST, Connect

#: A policy that would wait an hour between tries: a test that finishes did not follow it.
PATIENT = RetryPolicy(max_attempts=3, initial_interval=3600, max_interval=3600)


class Reply(msgspec.Struct):
    text: str
    usage_usd: float


def _failure(entry: Any) -> Failure:
    assert isinstance(entry, Run) and entry.failure is not None, entry
    return entry.failure


async def test_a_step_records_its_cost_as_a_number_or_a_function_of_its_result(connect: Connect) -> None:
    svc = Service("Costs")

    def ask() -> Reply:
        return Reply("hi", 0.25)

    @svc.handler()
    async def go(ctx: Context) -> str:
        reply = await ctx.run("ask", ask, cost=lambda r: r.usage_usd)
        await ctx.run("flat", lambda: 1, cost=2)
        return reply.text

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("Costs", "go", key=None))
    assert [(e.name, e.cost, e.attempts, e.variant) for e in entries if isinstance(e, Run)] == [
        ("ask", 0.25, 1, "primary"), ("flat", 2.0, 1, "primary")]
    assert end.output == b'"hi"'


async def test_failed_tries_add_what_they_cost_to_the_step(connect: Connect) -> None:
    svc = Service("Tries")
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise RetryableError("vendor busy", retry_after=0, cost=0.5)
        return "ok"

    @svc.handler()
    async def go(ctx: Context) -> str:
        return await ctx.run("call", flaky, cost=1, retry=FAST)

    @svc.handler()
    async def refused(ctx: Context) -> str:
        def refuse() -> str:
            raise TerminalError("bad request", code=400, cost=0.125)
        try:
            return await ctx.run("call", refuse)
        except TerminalError as exc:
            return f"{exc.code}"

    sidecar = await connect(svc)
    [run], end = await sidecar.finish(await sidecar.start("Tries", "go", key=None))
    assert isinstance(run, Run) and (run.cost, run.attempts, run.value) == (2.0, 3, b'"ok"')
    [run], end = await sidecar.finish(await sidecar.start("Tries", "refused", key=None))
    assert isinstance(run, Run) and run.cost == 0.125 and _failure(run).code == 400
    assert end.output == b'"400"'


async def test_a_cost_that_is_not_a_number_fails_the_step_with_a_clear_message(connect: Connect) -> None:
    svc = Service("BadCost")

    @svc.handler()
    async def from_result(ctx: Context) -> str:
        try:
            await ctx.run("ask", lambda: "text", cost=lambda r: r)  # type: ignore[arg-type, return-value]
        except TerminalError as exc:
            return exc.message
        return "ran"

    @svc.handler()
    async def constant(ctx: Context) -> None:
        await ctx.run("ask", lambda: 1, cost="cheap")  # type: ignore[call-overload]

    sidecar = await connect(svc)
    [run], end = await sidecar.finish(await sidecar.start("BadCost", "from_result", key=None))
    assert "cost= returned a value that is 'text' (str), not a number" in _failure(run).message
    assert end.output is not None and b"'ask'" in end.output
    # A constant that is not a number is refused before the step claims its index.
    entries, end = await sidecar.finish(await sidecar.start("BadCost", "constant", key=None))
    assert entries == [] and end.failure is not None and "'cheap'" in end.failure.message


def budgeted_service(tries: list[float], on_budget: str = "fail") -> Service:
    svc = Service("Budgeted")

    def spend(amount: float) -> float:
        tries.append(amount)
        return amount

    @svc.handler(budget=1.0, on_budget=on_budget)
    async def go(ctx: Context, amounts: list[float]) -> str:
        try:
            for i, amount in enumerate(amounts):
                await ctx.run(f"step-{i}", spend, amount, cost=amount)
        except BudgetExceeded as exc:
            return f"stopped: {exc.message}"
        return "all done"

    return svc


async def test_a_step_past_the_budget_does_not_run_and_fails_with_budget_exceeded(connect: Connect) -> None:
    tries: list[float] = []
    sidecar = await connect(budgeted_service(tries))
    inv = await sidecar.start("Budgeted", "go", b"[0.5, 0.5, 0.5]", key=None)
    entries, end = await sidecar.finish(inv)
    assert tries == [0.5, 0.5]
    refused = _failure(entries[2])
    assert (refused.code, refused.message) == (402, "budget exceeded: spent 1 of 1")
    assert isinstance(entries[2], Run) and entries[2].attempts == 0
    assert end.output == b'"stopped: budget exceeded: spent 1 of 1"'
    # The refusal is journaled: a replay raises it at the same place and runs nothing.
    again = await sidecar.start("Budgeted", "go", b"[0.5, 0.5, 0.5]", key=None, journal=entries, invocation_id=inv)
    _, replayed = await sidecar.finish(again)
    assert replayed.output == end.output and tries == [0.5, 0.5]


async def test_the_sidecars_budget_wins_over_the_handlers(connect: Connect) -> None:
    tries: list[float] = []
    sidecar = await connect(budgeted_service(tries))
    entries, end = await sidecar.finish(await sidecar.start("Budgeted", "go", b"[0.5, 0.5, 0.5]", key=None, budget=3))
    assert tries == [0.5, 0.5, 0.5] and end.output == b'"all done"'
    # Spending already journaled counts: a budget of 0.75 after 0.5 + 0.5 leaves nothing.
    journal = [Run(name="step-0", value=b"0.5", cost=0.5), Run(name="step-1", value=b"0.5", cost=0.5)]
    _, end = await sidecar.finish(await sidecar.start("Budgeted", "go", b"[0.5, 0.5, 0.5]", key=None,
                                                      journal=journal, budget=0.75))
    assert end.output == b'"stopped: budget exceeded: spent 1 of 0.75"' and len(tries) == 3


async def test_with_on_budget_pause_the_attempt_pauses_before_the_step_runs(connect: Connect) -> None:
    tries: list[float] = []
    sidecar = await connect(budgeted_service(tries, on_budget="pause"))
    inv = await sidecar.start("Budgeted", "go", b"[0.75, 0.5, 0.5]", key=None)
    entries, last = await sidecar.until_last(inv)
    assert tries == [0.75, 0.5] and len(entries) == 2
    assert last == Pause(invocation_id=inv, reason="budget exceeded: spent 1.25 of 1")
    # Resumed with a higher budget, the next attempt replays the first steps and runs the third.
    resumed = await sidecar.start("Budgeted", "go", b"[0.75, 0.5, 0.5]", key=None, journal=entries,
                                  invocation_id=inv, budget=2)
    _, end = await sidecar.finish(resumed)
    assert tries == [0.75, 0.5, 0.5] and end.output == b'"all done"'


async def test_retries_of_one_step_stop_at_the_budget(connect: Connect) -> None:
    svc = Service("Burn")
    tries: list[int] = []

    def outage() -> str:
        tries.append(1)
        raise RetryableError("503 from the vendor", retry_after=0, cost=0.4)

    @svc.handler(budget=1.0)
    async def go(ctx: Context) -> None:
        await ctx.run("llm", outage, retry=RetryPolicy(initial_interval=0))

    sidecar = await connect(svc)
    [run], end = await sidecar.finish(await sidecar.start("Burn", "go", key=None))
    assert len(tries) == 3  # 0.4, 0.8 were under 1.0; after 1.2 no fourth try
    assert isinstance(run, Run) and run.attempts == 3 and run.cost == pytest.approx(1.2)
    assert _failure(run).code == 402 and end.failure is not None and end.failure.code == 402


async def test_non_retryable_errors_fail_the_step_at_once(connect: Connect) -> None:
    svc = Service("Strict")
    tries: list[int] = []

    def invalid() -> None:
        tries.append(1)
        raise KeyError("no such model")

    @svc.handler()
    async def go(ctx: Context) -> None:
        await ctx.run("llm", invalid, retry=RetryPolicy(max_attempts=5, non_retryable=(LookupError,)))

    @svc.handler(retry=RetryPolicy(non_retryable=(LookupError,)))
    async def whole(ctx: Context) -> None:
        raise KeyError("no such tenant")

    sidecar = await connect(svc)
    [run], end = await sidecar.finish(await sidecar.start("Strict", "go", key=None))
    assert tries == [1] and "not retryable" in _failure(run).message
    _, end = await sidecar.finish(await sidecar.start("Strict", "whole", key=None))
    assert end.failure is not None and end.failure.terminal and "no such tenant" in end.failure.message


async def test_retry_after_sets_the_next_delay(connect: Connect) -> None:
    svc = Service("Polite")
    tries: list[int] = []

    def rate_limited() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise RetryableError("429", retry_after=datetime.timedelta(milliseconds=1))
        return "ok"

    @svc.handler()
    async def go(ctx: Context) -> str:
        return await ctx.run("llm", rate_limited, retry=PATIENT)

    sidecar = await connect(svc)
    _, end = await sidecar.finish(await sidecar.start("Polite", "go", key=None))  # not an hour later
    assert end.output == b'"ok"' and len(tries) == 2


async def test_max_elapsed_ends_the_retries_of_a_step(connect: Connect) -> None:
    svc = Service("Outage")
    tries: list[int] = []

    def down() -> None:
        tries.append(1)
        raise RetryableError("vendor down", retry_after=60)

    @svc.handler()
    async def go(ctx: Context) -> None:
        await ctx.run("llm", down, retry=RetryPolicy(max_elapsed=30))

    sidecar = await connect(svc)
    [run], end = await sidecar.finish(await sidecar.start("Outage", "go", key=None))
    assert tries == [1]  # the vendor's 60 s would pass max_elapsed: no second try
    assert "gave up after 1 attempts" in _failure(run).message and "max_elapsed 30 s" in _failure(run).message


async def test_the_fallback_takes_over_and_a_replay_returns_its_value(connect: Connect) -> None:
    svc = Service("Models")
    calls: list[str] = []

    def opus(prompt: str) -> Reply:
        calls.append("opus")
        raise RetryableError("overloaded", retry_after=0, cost=0.1)

    def haiku(prompt: str) -> Reply:
        calls.append("haiku")
        return Reply(f"haiku says {prompt}", 0.01)

    @svc.handler()
    async def go(ctx: Context, prompt: str) -> str:
        reply = await ctx.run("plan", opus, prompt, retry=RetryPolicy(max_attempts=4, initial_interval=0),
                              cost=lambda r: r.usage_usd, fallback=haiku, fallback_after=2)
        return reply.text

    sidecar = await connect(svc)
    inv = await sidecar.start("Models", "go", b'"hello"', key=None)
    [run], end = await sidecar.finish(inv)
    assert calls == ["opus", "opus", "haiku"] and end.output == b'"haiku says hello"'
    assert isinstance(run, Run) and (run.variant, run.attempts) == ("fallback", 3)
    assert run.cost == pytest.approx(0.21)
    again = await sidecar.start("Models", "go", b'"hello"', key=None, journal=[run], invocation_id=inv)
    _, replayed = await sidecar.finish(again)
    assert replayed.output == end.output and len(calls) == 3


def test_options_that_cannot_work_are_refused_where_they_are_written() -> None:
    svc = Service("Refused")

    async def fn(ctx: Context) -> None: ...

    with pytest.raises(ValueError, match="budget= is -1"):
        svc.handler("a", budget=-1)(fn)
    with pytest.raises(ValueError, match="on_budget must be one of"):
        svc.handler("b", on_budget="spend")(fn)
    with pytest.raises(ValueError, match="max_elapsed bounds a step"):
        svc.handler("c", retry=RetryPolicy(max_elapsed=5))(fn)
    with pytest.raises(ValueError, match="max_elapsed must be"):
        RetryPolicy(max_elapsed=-1)
    with pytest.raises(TypeError, match="non_retryable must be a tuple of exception types"):
        RetryPolicy(non_retryable=(str,))  # type: ignore[arg-type]


async def test_a_fallback_with_no_try_left_is_refused_before_the_step_runs(connect: Connect) -> None:
    svc = Service("NoRoom")

    @svc.handler()
    async def go(ctx: Context) -> None:
        await ctx.run("plan", lambda: 1, retry=RetryPolicy(max_attempts=2), fallback=lambda: 2, fallback_after=2)

    sidecar = await connect(svc)
    entries, end = await sidecar.finish(await sidecar.start("NoRoom", "go", key=None))
    assert entries == [] and isinstance(end, End) and end.failure is not None
    assert "leaves the fallback no try under max_attempts=2" in end.failure.message


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)
    assert retry_after("120") == 120.0
    assert retry_after("Thu, 03 Dec 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Thu, 03 Dec 2026 11:00:00 GMT", now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


async def _vendor(aiohttp_server: Any) -> str:
    """A vendor that answers /<status> with that status (and a Retry-After on /429)."""
    async def answer(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        headers = {"Retry-After": "7"} if status == 429 else {}
        return web.Response(status=status, headers=headers)

    application = web.Application()
    application.router.add_get("/{status}", answer)
    server = await aiohttp_server(application)
    return str(server.make_url(""))


@pytest.mark.parametrize("status, kind, code", [
    (400, TerminalError, 400), (401, TerminalError, 401), (403, TerminalError, 403), (404, TerminalError, 404),
    (422, TerminalError, 422), (408, RetryableError, None), (409, RetryableError, None),
    (425, RetryableError, None), (429, RetryableError, None), (500, RetryableError, None),
    (503, RetryableError, None),
])
async def test_raise_for_status_classifies_aiohttp_and_httpx_responses(
        aiohttp_server: Any, status: int, kind: type[Exception], code: int | None) -> None:
    base = await _vendor(aiohttp_server)
    raised: list[Exception] = []
    async with aiohttp.ClientSession() as session, session.get(f"{base}/{status}") as response:
        with pytest.raises(kind) as caught:
            raise_for_status(response)
        raised.append(caught.value)
    async with httpx.AsyncClient() as client:
        with pytest.raises(kind) as caught:
            raise_for_status(await client.get(f"{base}/{status}"))
        raised.append(caught.value)
    for exc in raised:
        assert str(status) in str(exc) and f"/{status}" in str(exc)
        if code is not None:
            assert isinstance(exc, TerminalError) and exc.code == code
        else:
            assert isinstance(exc, RetryableError) and exc.retry_after == (7.0 if status == 429 else None)


async def test_raise_for_status_lets_a_success_through(aiohttp_server: Any) -> None:
    base = await _vendor(aiohttp_server)
    async with aiohttp.ClientSession() as session, session.get(f"{base}/200") as response:
        raise_for_status(response)
    async with httpx.AsyncClient() as client:
        raise_for_status(await client.get(f"{base}/204"))


class _Answer:
    """What raise_for_status reads of a response: the fields aiohttp's and httpx's share."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self.url = "http://vendor/x"


@settings(max_examples=300)
@given(status=st.integers(min_value=100, max_value=599),
       retry=st.none() | st.text(max_size=40) | st.integers(min_value=0, max_value=10**12).map(str))
def test_raise_for_status_classifies_any_status_and_any_retry_after(status: int, retry: str | None) -> None:
    headers = {} if retry is None else {"Retry-After": retry}
    try:
        raise_for_status(_Answer(status, headers))
    except RetryableError as exc:
        assert status >= 500 or status in (408, 409, 425, 429)
        assert exc.retry_after is None or exc.retry_after >= 0
    except TerminalError as exc:
        assert 400 <= status < 500 and exc.code == status
    else:
        assert status < 400
