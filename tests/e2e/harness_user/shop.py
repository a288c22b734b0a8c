"""A user's services, as a user's project would have them: a trial that reminds after 3 days,
an order that charges then ships, a quote with a one-hour deadline, a handler that fails once
and is retried an hour later, a counter.

Side effects are lines appended to the file named by ``SIDE_EFFECTS`` (one per step that ran),
so tests count what happened outside, as a payment provider or a mailer would.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from handler_sdk import Context, ObjectContext, RetryPolicy, Service, VirtualObject


def side_effect(what: str) -> str:
    with Path(os.environ["SIDE_EFFECTS"]).open("a") as log:
        log.write(what + "\n")
    return what


trial = VirtualObject("Trial")


@trial.handler()
async def start(ctx: ObjectContext, email: str) -> str:
    began = await ctx.now()
    await ctx.run("welcome", side_effect, f"welcome {email}")
    await ctx.sleep(timedelta(days=3))
    await ctx.run("reminder", side_effect, f"reminder {email}")
    waited = await ctx.now() - began
    return f"reminded {email} after {waited.days} days"


@trial.handler()
async def welcome(ctx: ObjectContext, email: str) -> str:
    return await ctx.run("welcome", side_effect, f"welcome {email}")


orders = VirtualObject("Order")


def ship(order: str) -> str:
    """Ships once the warehouse says so: the test holds it here, mid-step, to kill the process."""
    gate = Path(os.environ["SIDE_EFFECTS"] + ".gate")
    Path(os.environ["SIDE_EFFECTS"] + ".shipping").touch()
    while not gate.exists():
        time.sleep(0.01)
    return side_effect(f"ship {order}")


@orders.handler()
async def checkout(ctx: ObjectContext, amount: int) -> str:
    await ctx.run("charge", side_effect, f"charge {ctx.key} {amount}")
    await ctx.run("ship", ship, ctx.key)
    return f"{ctx.key} shipped"


quotes = Service("Quote")


@quotes.handler(timeout=timedelta(hours=1))
async def hold(ctx: Context) -> str:
    await ctx.sleep(timedelta(days=1))  # longer than the quote is good for
    return "held a day"


flaky = Service("Flaky")


@flaky.handler(retry=RetryPolicy(initial_interval=3600, max_interval=3600))
async def twice(ctx: Context) -> str:
    """Fails its first attempt; the sidecar backs off half an hour to an hour before the next."""
    failed = Path(os.environ["SIDE_EFFECTS"] + ".failed")
    if not failed.exists():
        failed.touch()
        raise RuntimeError("the first attempt fails")
    return "the second attempt worked"


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("count", type=int) or 0) + n
    ctx.set("count", total)
    return total


SERVICES = [trial, orders, quotes, flaky, counter]
