"""Handlers that schedules fire, for tests/e2e/test_schedules.py.

Each firing reports itself at the sink as ``POST /effect`` with the idempotency key
``{schedule}|{fire time}|{invocation ID}``, so a test can tell each fire time's invocations
apart from repeated deliveries of one invocation's step (which a crash may cause).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from handler_sdk import Context, ObjectContext, Service, VirtualObject, Workflow, WorkflowContext
from tests.e2e.handlers import _post

#: A slow firing waits for this file (in the directory the test names) before it ends.
GATE_DIR = Path(os.environ.get("SCHEDULE_GATES", "/nonexistent"))


async def _report(ctx: Context | ObjectContext | WorkflowContext) -> None:
    marker = "|".join((ctx.headers.get("x-sidecar-schedule", "-"), ctx.headers.get("x-sidecar-fire-time", "-"),
                       ctx.invocation_id))
    await ctx.run("report", _post, "/effect", {"idempotency-key": marker})


ticks = Service("Ticks")


@ticks.handler()
async def tick(ctx: Context, note: str | None) -> str:
    await _report(ctx)
    return note or "tick"


@ticks.handler()
async def slow(ctx: Context, gate: str) -> str:
    """Reports, then ends only once the file ``gate`` exists."""
    await _report(ctx)

    async def wait() -> str:
        while not (GATE_DIR / gate).exists():
            await asyncio.sleep(0.05)
        return gate

    return await ctx.run("gate", wait)


clock = VirtualObject("Clock")


@clock.handler()
async def chime(ctx: ObjectContext) -> int:
    await _report(ctx)
    chimes = (await ctx.get("chimes", type=int) or 0) + 1
    ctx.set("chimes", chimes)
    return chimes


report = Workflow("Report")


@report.main()
async def run(ctx: WorkflowContext) -> str:
    await _report(ctx)
    return ctx.key


SERVICES = [ticks, clock, report]
