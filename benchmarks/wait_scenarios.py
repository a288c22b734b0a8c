"""The handlers ``benchmarks.waits`` drives: durable timers and resuming after suspension.

    python -m handler_sdk benchmarks.wait_scenarios:ALL --port 9080 --suspend-after 0.1

- ``WaitBench.timer`` (body: a due instant, epoch ms): journals ``ctx.now()``, sleeps on a durable
  timer until the due instant, and on waking journals ``ctx.now()`` again and returns it. The
  benchmark reads the journal back: the ``Sleep`` entry's ``wake_at_ms`` is the timer's due time,
  the second ``Now`` the instant the handler saw itself awake (after the sidecar fired the timer,
  made the completion durable and started a new attempt that replayed the journal).
- ``WaitBench.resume`` (body: a number of steps ``n``): ``n`` cheap ``ctx.run`` steps (each returns
  its own index), then one awakeable, awaited; returns the awakeable's value plus ``n``. With the
  ``Input`` entry the journal holds ``n + 2`` entries when the handler suspends on the awakeable;
  its ID is read from the journal through the admin API.
"""

from __future__ import annotations

import datetime

from handler_sdk import Context, Service

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)

wait_bench = Service("WaitBench")


def epoch_ms(instant: datetime.datetime) -> int:
    return (instant - _EPOCH) // _MS


@wait_bench.handler()
async def timer(ctx: Context, due_ms: int) -> int:
    planned = epoch_ms(await ctx.now())
    # A timedelta in whole milliseconds: the SDK adds it to its clock reading as an integer.
    await ctx.sleep(datetime.timedelta(milliseconds=max(0, due_ms - planned)))
    return epoch_ms(await ctx.now())


async def _step(i: int) -> int:
    return i


@wait_bench.handler()
async def resume(ctx: Context, n: int) -> int:
    for i in range(n):
        await ctx.run(f"s{i}", _step, i)
    _, value = ctx.awakeable(type=int)
    return await value + n


ALL = [wait_bench]
