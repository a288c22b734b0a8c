"""A counter per key: the smallest virtual object.

    .venv/bin/python -m handler_sdk examples.counter:counter --port 9080
    curl -s localhost:8080/Counter/alice/add -H 'content-type: application/json' -d 5
"""

from __future__ import annotations

from handler_sdk import ObjectContext, ObjectSharedContext, VirtualObject, serve

counter = VirtualObject("Counter")


async def audit(key: str, n: int) -> str:
    """A stand-in for a side effect (a call to an audit service): journaled once, so a retried or
    replayed ``add`` never audits twice. Sync functions work too; the SDK runs them off the loop."""
    return f"Counter[{key}] += {n}"


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    """Add ``n`` to this key's count and return the new total (exclusive: one at a time per key)."""
    total = (await ctx.get("count") or 0) + n
    await ctx.run("audit", audit, ctx.key, n)
    ctx.set("count", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    """The current count; runs alongside ``add``."""
    return await ctx.get("count") or 0


if __name__ == "__main__":
    serve([counter], port=9080)
