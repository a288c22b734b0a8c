"""The handler the tracing tests trace: four steps, one retried, one failing, one that waits for a
file so that a test can kill processes while it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from handler_sdk import Context, RetryPolicy, Service, TerminalError

traced = Service("Traced")

#: Tries of the "flaky" step per invocation, in this process.
_tries: dict[str, int] = {}


@traced.handler()
async def journey(ctx: Context, gate: str) -> dict[str, object]:
    """Runs its steps, the last one once the file ``gate`` exists; answers the trace context its
    code saw (``ctx.headers``)."""
    first = await ctx.run("first", lambda: 1)

    def flaky() -> int:
        _tries[ctx.invocation_id] = _tries.get(ctx.invocation_id, 0) + 1
        if _tries[ctx.invocation_id] == 1:
            raise ConnectionError("the first try fails")
        return 2

    second = await ctx.run("flaky", flaky, cost=0.25, retry=RetryPolicy(initial_interval=0.01))

    def doomed() -> None:
        raise TerminalError("no such thing", 404)

    try:
        await ctx.run("doomed", doomed)
    except TerminalError:
        pass

    async def opened() -> int:
        while not Path(gate).exists():  # the test opens the gate once it has killed what it kills
            await asyncio.sleep(0.02)
        return 3

    third = await ctx.run("gated", opened)
    return {"sum": first + second + third, "traceparent": ctx.headers.get("traceparent")}


@traced.handler()
async def relay(ctx: Context, n: int) -> int:
    """Calls ``leaf``, whose invocation continues this one's trace."""
    return int(await ctx.service_call("Traced", "leaf", n, type=int))


@traced.handler()
async def leaf(ctx: Context, n: int) -> int:
    return int(await ctx.run("leaf-step", lambda: n + 1))


SERVICES = [traced]
