"""Handlers whose steps call a vendor behind a circuit breaker, or run in a limit group, for the
end-to-end tests of breakers and limits.

``FIRST`` and ``SECOND`` are served by two handler processes registered with one sidecar: they
share the breaker only through it. The vendor is the sink: each call counts ``vendor-calls``,
and it is down until the test leaves the note ``vendor-up``.
"""

from __future__ import annotations

import asyncio

from handler_sdk import CircuitBreaker, Context, RetryPolicy, Service
from tests.e2e.handlers import SINK, _http, _post

vendor = CircuitBreaker("vendor", failure_threshold=3, cool_down=1.5)
#: Tries go on in-process, so that a try after the breaker opened is one the breaker refuses.
_PATIENT = RetryPolicy(max_attempts=None, initial_interval=0.05, max_interval=0.2)


async def _call_vendor() -> str:
    await _post("/incr/vendor-calls")
    async with _http().get(f"{SINK}/notes/vendor-up") as response:
        if response.status != 200:
            raise ConnectionError("the vendor is down")
    return "served"


async def _fetch(ctx: Context) -> str:
    return await ctx.run("vendor", _call_vendor, breaker=vendor, retry=_PATIENT)


first = Service("VendorA")
second = Service("VendorB")
first.handler(name="fetch")(_fetch)
second.handler(name="fetch")(_fetch)


async def _limited(ctx: Context, group: str) -> str:
    """One step in limit group ``group``, inside for a while (the sink counts how many at once)."""
    async def work() -> str:
        await _post(f"/enter/{group}")
        await asyncio.sleep(0.3)
        await _post(f"/exit/{group}")
        return "done"
    return await ctx.run("work", work, limit=group)


async def _hang(ctx: Context, name: str) -> str:
    """A step in group ``solo`` whose first try hangs until its process is killed."""
    async def gate() -> str:
        if await _post(f"/incr/hang-{name}") == 1:
            await asyncio.sleep(3600)
        return "through"
    return await ctx.run("hang", gate, limit="solo")


for _service in (first, second):
    _service.handler(name="limited")(_limited)
    _service.handler(name="hang")(_hang)

FIRST = [first]
SECOND = [second]
