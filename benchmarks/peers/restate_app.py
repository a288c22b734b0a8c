"""The Restate side of the peer benchmark: the same Counter and Steps, written with ``restate-sdk``.

    .bench/peers/venv/bin/hypercorn -k uvloop --bind 127.0.0.1:9080 benchmarks.peers.restate_app:app

Runs in the peers' own venv (``benchmarks.peers.install``), never the project's, served by hypercorn
as Restate's Python SDK documents (it speaks HTTP/2 to the Restate server; registered with
``"use_http_11": true`` the server discovers it over HTTP/1.1 and drives it request/response).

- ``Counter`` (a virtual object): ``add`` is ``examples.counter``'s line for line: a state read, one
  ``ctx.run`` step (``audit``), a state write, exclusive per key; ``get`` is shared.
- ``Steps.run`` (a service): the three ``benchmarks.logic.STEPS``, each a ``ctx.run``.
"""

from __future__ import annotations

import restate
from restate import Context, ObjectContext, ObjectSharedContext, RunOptions

from benchmarks import logic


async def audit(key: str, n: int) -> str:
    """``examples.counter.audit``, copied: that module imports ``handler_sdk``, which this venv lacks."""
    return f"Counter[{key}] += {n}"


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("count", type_hint=int) or 0) + n
    await ctx.run_typed("audit", audit, RunOptions(), ctx.key(), n)
    ctx.set("count", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return await ctx.get("count", type_hint=int) or 0


steps = restate.Service("Steps")


@steps.handler()
async def run(ctx: Context, n: int) -> int:
    x = n
    for name, fn in logic.STEPS:
        x = await ctx.run_typed(name, fn, RunOptions(), x)
    return x


app = restate.app(services=[counter, steps])
