"""Handler services used by the end-to-end tests. Side effects go to the external sink."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import cast

import aiohttp
import msgspec

from handler_sdk import (
    Context, ObjectContext, ObjectSharedContext, RetryPolicy, Service, TerminalError, VirtualObject, Workflow,
    WorkflowContext, WorkflowSharedContext,
)

from handler_sdk._invocation import AttemptContext  # the rogue handler below reaches past the SDK
from handler_sdk.protocol import MAX_IDENTIFIER_BYTES, CompletePromise, Entry, Send, SetState, entry_name

SINK = os.environ.get("SINK_URL", "http://127.0.0.1:1")
_session: aiohttp.ClientSession | None = None


def _http() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    return _session


async def _post(path: str, headers: dict[str, str] | None = None) -> object:
    async with _http().post(f"{SINK}{path}", headers=headers) as response:
        response.raise_for_status()
        return await response.json()


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("count", type=int) or 0) + n
    await ctx.run("double-check", lambda: total)
    ctx.set("count", total)
    return total


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return await ctx.get("count", type=int) or 0


@counter.handler()
async def hold(ctx: ObjectContext, ms: int) -> str:
    """Records entering and leaving at the sink, so overlaps on one key are visible there."""
    await _post(f"/enter/{ctx.key}")
    await asyncio.sleep(ms / 1000)
    await _post(f"/exit/{ctx.key}")
    return ctx.invocation_id


@counter.handler()
async def append(ctx: ObjectContext, item: str) -> list[str]:
    """Keeps every item in the order the key ran them."""
    items = [*(await ctx.get("items", type=list[str]) or []), item]
    ctx.set("items", items)
    return items


@counter.handler(kind="shared")
async def items(ctx: ObjectSharedContext) -> list[str]:
    return await ctx.get("items", type=list[str]) or []


@counter.handler()
async def bump_when_approved(ctx: ObjectContext, name: str) -> int:
    """Reads the count, publishes an awakeable's ID at the sink, and once someone resolves it
    writes what it read plus one: the key is held all the while."""
    count = await ctx.get("count", type=int) or 0
    awakeable_id, go = ctx.awakeable(type=str)

    async def publish() -> None:
        async with _http().post(f"{SINK}/notes/{name}", data=awakeable_id) as response:
            response.raise_for_status()

    await ctx.run("publish", publish)
    await go
    ctx.set("count", count + 1)
    return count + 1


steps = Service("Steps")


@steps.handler()
async def twenty(ctx: Context, name: str) -> list[int]:
    """20 steps, each delivering one side effect to the sink under its step's idempotency key.

    Once a step's result is back (acknowledged as durable), the sink is told so: a delivery of
    that key after this point would be a step that ran again.
    """
    results = []
    for i in range(20):
        async def deliver(i: int = i) -> tuple[int, str]:
            key = ctx.idempotency_key()
            await asyncio.sleep(0.05)  # a vendor call takes a while: crashes land mid-step
            await _post("/effect", {"idempotency-key": key})
            return i * i, key
        value, key = await ctx.run(f"step-{i}", deliver)
        await _post("/acked", {"idempotency-key": key})
        results.append(value)
    return results


class Order(msgspec.Struct):
    item: str
    quantity: int


@steps.handler()
async def typed(ctx: Context, order: Order) -> str:
    return f"{order.quantity} x {order.item}"


@steps.handler()
async def refuse(ctx: Context, reason: str) -> None:
    raise TerminalError(f"refused: {reason}", code=422)


@steps.handler()
async def flaky_step(ctx: Context, name: str) -> int:
    """The step fails twice, then succeeds: three tries counted at the sink, one journaled result."""

    async def attempt() -> int:
        tries = await _post(f"/incr/{name}")
        if tries < 3:
            raise RuntimeError(f"flaky vendor, try {tries}")
        return tries

    return await ctx.run("vendor", attempt, retry=RetryPolicy(max_attempts=5, initial_interval=0.01))


@steps.handler()
async def hopeless_step(ctx: Context, name: str) -> int:
    async def attempt() -> int:
        await _post(f"/incr/{name}")
        raise RuntimeError("vendor is down")

    try:
        return await ctx.run("vendor", attempt, retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    except TerminalError as exc:
        raise TerminalError(f"gave up: {exc}", code=502) from None


@steps.handler(retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
async def crashy(ctx: Context, name: str) -> str:
    """Fails outside any step: the invocation is retried, then paused after 3 attempts."""
    await _post(f"/incr/{name}")
    raise RuntimeError("bug in handler code")


@steps.handler()
async def gated_step(ctx: Context, gate: str) -> str:
    """One step that runs until the file ``gate`` exists: a test holds it open for as long as it
    needs, whatever the machine's speed."""

    async def work() -> str:
        while not Path(gate).exists():
            await asyncio.sleep(0.02)
        return "done"

    return await ctx.run("gated vendor", work)


@steps.handler()
async def long_step(ctx: Context, seconds: float) -> str:
    """One step that outlasts the sidecar's inactivity timeout: heartbeats keep the attempt alive."""

    async def work() -> str:
        await asyncio.sleep(seconds)
        return "done"

    return await ctx.run("slow vendor", work)


@steps.handler()
async def slow_steps(ctx: Context, name: str) -> list[int]:
    """Five steps of a second each, every one delivering a side effect counted at the sink."""
    results = []
    for i in range(5):
        async def deliver(i: int = i) -> int:
            await asyncio.sleep(1.0)
            await _post("/effect", {"idempotency-key": f"{name}-{i}"})
            return i
        results.append(await ctx.run(f"slow-{i}", deliver))
    return results


@steps.handler()
async def length(ctx: Context, text: str) -> int:
    return len(text)


@steps.handler()
async def blocking_step(ctx: Context, seconds: float) -> str:
    """One step whose sync function blocks a thread (the SDK runs sync steps in threads)."""
    return await ctx.run("blocking vendor", lambda: time.sleep(seconds) or "done")


@steps.handler()
async def hang_once(ctx: Context, name: str) -> int:
    """The first attempt hangs outside any step (no heartbeats): the sidecar must give up on it."""
    tries = await _post(f"/incr/{name}")
    if tries == 1:
        await asyncio.sleep(3600)
    return tries


waits = Service("Waits")


@waits.handler()
async def nap(ctx: Context, name: str) -> str:
    """Sleeps durably for 2 s, then counts its wake-up at the sink (once, whatever crashes)."""
    await ctx.sleep(2.0)
    await ctx.run("wake", lambda: _post(f"/incr/wake-{name}"))
    return "rested"


@waits.handler()
async def park(ctx: Context, seconds: float) -> str:
    await ctx.sleep(seconds)
    return "back"


@waits.handler()
async def approval(ctx: Context, name: str) -> str:
    """Publishes an awakeable's ID at the sink, dawdles, then waits for someone to resolve it."""
    awakeable_id, decision = ctx.awakeable(type=str)

    async def publish() -> None:
        async with _http().post(f"{SINK}/notes/{name}", data=awakeable_id) as response:
            response.raise_for_status()

    await ctx.run("publish", publish)
    await ctx.sleep(0.5)  # a resolution may well arrive before the await: it must be kept
    try:
        return f"approved: {await decision}"
    except TerminalError as exc:
        return f"rejected: {exc.message}"


@waits.handler()
async def compensating(ctx: Context, name: str) -> str:
    """Books, then waits; a cancellation arrives at the wait and the booking is undone."""
    await ctx.run("book", lambda: _post(f"/incr/book-{name}"))
    try:
        await ctx.sleep(60)
    except TerminalError:
        await ctx.run("unbook", lambda: _post(f"/incr/unbook-{name}"))
        raise
    return "done"


@waits.handler(timeout=1.0)
async def slowpoke(ctx: Context) -> str:
    await ctx.sleep(30)
    return "too late"


@waits.handler()
async def resolve_own_early(ctx: Context, ingress: str) -> str:
    """Resolves its own awakeable over HTTP before the awakeable's entry can reach the sidecar:
    the blocking request holds the event loop, so the entry is still queued to be sent."""
    awakeable_id, decision = ctx.awakeable(type=str)
    request = urllib.request.Request(f"http://{ingress}/restate/awakeables/{awakeable_id}/resolve",
                                     data=b'"early"', method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a test's own URL
            status = response.status
    except urllib.error.HTTPError as exc:  # a replay finds it completed already
        status = exc.code
    return f"{status}: {await decision}"


@waits.handler()
async def resolve_all(ctx: Context, awakeable_ids: list[str]) -> None:
    for awakeable_id in awakeable_ids:
        ctx.resolve_awakeable(awakeable_id, "by a handler, at last")


@waits.handler()
async def approve_for(ctx: Context, awakeable_id: str) -> None:
    ctx.resolve_awakeable(awakeable_id, "by another handler")


callers = VirtualObject("Callers")


@callers.handler()
async def relay(ctx: ObjectContext, n: int) -> int:
    """Calls another object's handler, then sends it one more add, one-way."""
    total = await ctx.object_call("Counter", f"relay-{ctx.key}", "add", n, type=int)
    ctx.object_send(counter, f"relay-{ctx.key}", add, 100)
    return total


@callers.handler()
async def ask_refuse(ctx: ObjectContext) -> str:
    """The callee's terminal error reaches the caller's await with its code."""
    try:
        await ctx.service_call(steps, "refuse", "no stock")
    except TerminalError as exc:
        return f"{exc.code}: {exc.message}"
    return "not refused"


@callers.handler()
async def once(ctx: ObjectContext, name: str) -> list[int]:
    """The callee delivers an effect to the sink: whatever crashes, once."""
    return await ctx.service_call("Steps", "twenty", name, type=list[int])


@callers.handler()
async def ping(ctx: ObjectContext, depth: int) -> str:
    return await ctx.object_call("Pongs", ctx.key, "pong", depth, type=str)


@callers.handler()
async def notify(ctx: ObjectContext, service: str) -> str:
    """Sends one-way to ``service``'s ``ping``, which may not be registered yet."""
    ctx.service_send(service, "ping", ctx.key)
    return "sent"


@callers.handler()
async def notify_later(ctx: ObjectContext, service: str) -> str:
    """Like ``notify``, with the send due one second from now."""
    ctx.service_send(service, "ping", ctx.key, delay=timedelta(seconds=1))
    return "sent"


@callers.handler()
async def fan_out(ctx: ObjectContext, n: int) -> str:
    """Sends ``n`` appends to one Counter key, one-way, in order."""
    for i in range(n):
        ctx.object_send(counter, "fan", append, f"{ctx.key}-{i}")
    return "sent"


pongs = VirtualObject("Pongs")


@pongs.handler()
async def pong(ctx: ObjectContext, depth: int) -> str:
    """Calls back into the caller's key: an exclusive cycle that must be refused, not deadlock."""
    try:
        return await ctx.object_call("Callers", ctx.key, "ping", depth - 1, type=str)
    except TerminalError as exc:
        return f"refused {exc.code}: {exc.message}"


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    ctx.set("status", "waiting for approval")
    decision = await ctx.promise("approval", type=str).value()
    ctx.set("status", decision)
    return f"{email}: {decision}"


@signup.handler()
async def approve(ctx: WorkflowSharedContext, decision: str) -> str:
    await ctx.promise("approval").resolve(decision)
    return "recorded"


@signup.handler()
async def status(ctx: WorkflowSharedContext) -> str | None:
    return await ctx.get("status", type=str)


@callers.handler()
async def rerun(ctx: ObjectContext, workflow_key: str) -> str:
    """Calls a workflow's run for a key that already ran: the call fails with 409, wherever it lives."""
    try:
        return await ctx.object_call(signup, workflow_key, run, "again@example.com", type=str)
    except TerminalError as exc:
        return f"{exc.code}: {exc.message}"


streams = Service("Streams")


@streams.handler()
async def chat(ctx: Context, prompt: str) -> str:
    """Streams its words as tokens from inside a step, then waits for a verdict on an
    awakeable whose ID it publishes, and answers with both."""
    ctx.publish({"stage": "thinking"})

    async def generate() -> str:
        for word in prompt.split():
            ctx.publish(word, ephemeral=True)
        return prompt.upper()

    text = await ctx.run("generate", generate)
    awakeable_id, verdict = ctx.awakeable()
    ctx.publish({"stage": "review", "awakeable": awakeable_id})
    decided = await verdict
    ctx.publish({"stage": "done", "verdict": decided})
    return f"{text} ({decided})"


names = VirtualObject("Names")


@names.handler()
async def remember(ctx: ObjectContext, name: str) -> int:
    """Sets state ``name`` (as long as the caller likes) to the name's length in bytes."""
    ctx.set(name, len(name.encode()))
    return len(name.encode())


@names.handler(kind="shared")
async def recall(ctx: ObjectSharedContext, name: str) -> int | None:
    return await ctx.get(name, type=int)


@names.handler()
async def send_add(ctx: ObjectContext, key: str) -> str:
    ctx.object_send(counter, key, add, 1)
    return "sent"


@names.handler()
async def call_add(ctx: ObjectContext, key: str) -> int:
    return await ctx.object_call(counter, key, add, 1, type=int)


@names.handler(retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
async def forge(ctx: ObjectContext, what: str) -> str:
    """Journals an identifier over the limit past the SDK's own checks, as a handler built on
    another SDK could: the sidecar must fail the attempt, never the write that would carry it."""
    too_long = "x" * (MAX_IDENTIFIER_BYTES + 1)
    entry: Entry = {
        "state": SetState(name=too_long, value=b"1"),
        "send": Send(service="Counter", handler="add", key=too_long, input=b"1"),
        "promise": CompletePromise(name=too_long, value=b"1"),
    }[what]
    attempt = cast(AttemptContext, ctx)
    index, _ = attempt._step(type(entry), entry_name(entry))
    attempt._command(index, entry)
    return "forged"


SERVICES = [counter, steps, waits, callers, pongs, signup, streams, names]
