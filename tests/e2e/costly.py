"""Handlers whose steps report what they cost, for the end-to-end tests of cost accounting."""

from __future__ import annotations

import asyncio

from handler_sdk import Context, ObjectContext, Service, VirtualObject
from tests.e2e.handlers import _post

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


SERVICES = [agents, tools]
