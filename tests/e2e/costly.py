"""Handlers whose steps report what they cost, for the end-to-end tests of cost accounting."""

from __future__ import annotations

import asyncio

from handler_sdk import (
    BudgetExceeded, Context, ObjectContext, RetryPolicy, Service, TerminalError, VirtualObject, raise_for_status,
)
from tests.e2e.handlers import SINK, _http, _post

agents = VirtualObject("Agents")


async def _spend(ctx: Context, spend: dict[str, float]) -> float:
    """One step per name, each reporting its cost."""
    for name, cost in spend.items():
        await ctx.run(name, lambda: name, cost=cost)
    return sum(spend.values())


@agents.handler()
async def work(ctx: ObjectContext, spend: dict[str, float]) -> float:
    return await _spend(ctx, spend)


@agents.handler()
async def review(ctx: ObjectContext, spend: dict[str, float]) -> float:
    return await _spend(ctx, spend)


@agents.handler()
async def gated(ctx: ObjectContext, name: str) -> str:
    """A durable step, then one whose first try hangs until a process is killed (the sink counts tries)."""
    await ctx.run("plan", lambda: "planned", cost=0.25)

    async def gate() -> str:
        if await _post(f"/incr/gate-{name}") == 1:
            await asyncio.sleep(3600)
        return "through"

    return await ctx.run("gate", gate, cost=0.5)


tools = Service("Tools")


@tools.handler()
async def quote(ctx: Context, cost: float) -> float:
    return await _spend(ctx, {"llm": cost})


async def _paid_call(name: str) -> str:
    """One call of the sink's paid vendor endpoint (counted there), costing 0.5."""
    await _post(f"/vendor/{name}")
    return name


async def _hang_first_try(gate: str) -> None:
    if await _post(f"/incr/{gate}") == 1:
        await asyncio.sleep(3600)  # until the test kills the handler process


@agents.handler(budget=2.0)
async def spend(ctx: ObjectContext, steps: int) -> str:
    """Up to ``steps`` paid calls of 0.5 each; the third one's first try hangs (a kill point)."""
    done = 0
    try:
        for i in range(steps):
            if i == 2:
                await ctx.run("gate", _hang_first_try, f"gate-spend-{ctx.key}")
            await ctx.run("llm", _paid_call, f"paid-{ctx.key}", cost=0.5)
            done += 1
    except BudgetExceeded as exc:
        return f"stopped after {done}: {exc.message}"
    return f"all {done} done"


@agents.handler(budget=1.0, on_budget="pause")
async def careful(ctx: ObjectContext, steps: int) -> str:
    for _ in range(steps):
        await ctx.run("llm", _paid_call, f"careful-{ctx.key}", cost=0.5)
    return f"all {steps} done"


async def _vendor(name: str, query: str) -> str:
    async with _http().post(f"{SINK}/vendor/{name}?{query}") as response:
        raise_for_status(response, cost=0.1)
        return str((await response.json())["text"])


async def _premium(key: str) -> str:
    return await _vendor(f"premium-{key}", "fail=1000&status=503")  # a long outage


async def _cheap(key: str) -> str:
    return await _vendor(f"cheap-{key}", "")


@agents.handler()
async def plan(ctx: ObjectContext) -> str:
    """The premium model is down: after two billed failures the cheaper one answers. A later step's
    first try hangs, so that a kill there replays the plan from the journal."""
    answer = await ctx.run("plan", _premium, ctx.key, retry=RetryPolicy(max_attempts=4, initial_interval=0.01),
                           cost=0.02, fallback=_cheap, fallback_after=2)
    await ctx.run("gate", _hang_first_try, f"gate-plan-{ctx.key}")
    return answer


@agents.handler()
async def polite(ctx: ObjectContext) -> str:
    """429 with Retry-After: 1 on the first call: a policy that would wait an hour finishes in a second."""
    return await ctx.run("ask", _vendor, f"polite-{ctx.key}", "fail=1&status=429&retry_after=1",
                         retry=RetryPolicy(max_attempts=3, initial_interval=3600, max_interval=3600))


@agents.handler()
async def patient(ctx: ObjectContext) -> str:
    """A vendor that is down for good: max_elapsed ends the retries, not max_attempts."""
    try:
        return await ctx.run("ask", _vendor, f"down-{ctx.key}", "fail=1000&status=502",
                             retry=RetryPolicy(initial_interval=0.05, max_interval=0.05, max_elapsed=0.5))
    except TerminalError as exc:
        return exc.message


@agents.handler()
async def unauthorized(ctx: ObjectContext) -> str:
    try:
        return await ctx.run("ask", _vendor, f"auth-{ctx.key}", "fail=1000&status=401")
    except TerminalError as exc:
        return f"{exc.code}"


SERVICES = [agents, tools]
