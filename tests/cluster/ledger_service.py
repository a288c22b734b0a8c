"""The handler service of the ledger tests: every step it runs, and every step it sees
acknowledged, is written to a ledger outside the system, so a checker (``ledger.py``) can tell
what really happened from what the sidecar says happened.

The ledger is an append-only file (path in ``LEDGER_PATH``) of JSON lines, each written with one
``os.write`` on an ``O_APPEND`` descriptor: a line is never torn nor interleaved with another,
whichever process or task writes it, and it is in the kernel's hands before the step goes on (a
killed sidecar cannot lose it; the tests never kill this service). Times are ``time.monotonic()``, which is the machine's
``CLOCK_MONOTONIC``, so a test on the same machine can compare them with its own.

    LEDGER_PATH=/tmp/ledger.jsonl python -m handler_sdk tests.cluster.ledger_service:SERVICES --port 9080
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from handler_sdk import ObjectContext, ObjectSharedContext, VirtualObject

from tests.cluster.ledger import Acked, Enter, LedgerLine, Leave, Run

T = TypeVar("T")

#: How long a step's body takes: long enough that a kill lands inside a step now and then.
STEP_S = 0.03
#: How many steps a ``Flow.steps`` invocation runs.
FLOW_STEPS = 10


class Ledger:
    """Appends lines to the ledger file; opened on first use (the path comes from the environment)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._encoder = msgspec.json.Encoder()

    def append(self, line: LedgerLine) -> None:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = self._encoder.encode(line) + b"\n"
        written = os.write(self._fd, data)  # one write on O_APPEND: the line lands whole, at the end
        if written != len(data):
            raise OSError(f"ledger line written short: {written} of {len(data)} bytes")


LEDGER = Ledger(os.environ.get("LEDGER_PATH", os.devnull))


async def _step(ctx: ObjectContext, attempt: str, name: str, body: Callable[[], Awaitable[T]]) -> T:
    """``ctx.run(name, body)`` with the ledger lines around it: a ``Run`` line for each execution
    of the body (written as it ends, however it ends), an ``Acked`` line once ``ctx.run`` returns."""

    async def recorded() -> T:
        started = time.monotonic()
        completed = False
        try:
            result = await body()
            completed = True
            return result
        finally:
            LEDGER.append(Run(invocation=ctx.invocation_id, key=ctx.key, step=name, attempt=attempt,
                              idempotency_key=ctx.idempotency_key(), started=started, ended=time.monotonic(),
                              completed=completed))

    value = await ctx.run(name, recorded)
    LEDGER.append(Acked(invocation=ctx.invocation_id, key=ctx.key, step=name, attempt=attempt,
                        value=msgspec.to_builtins(value), at=time.monotonic()))
    return value


async def _exclusive(ctx: ObjectContext, service: str, handler: Callable[[str], Awaitable[T]]) -> T:
    """Runs ``handler`` between an ``Enter`` and a ``Leave`` line of one attempt (a random token:
    the SDK does not tell handlers which attempt they are)."""
    attempt = secrets.token_hex(8)
    LEDGER.append(Enter(invocation=ctx.invocation_id, service=service, key=ctx.key, attempt=attempt,
                        at=time.monotonic()))
    outcome = "cut"
    try:
        result = await handler(attempt)
        outcome = "returned"
        return result
    finally:
        LEDGER.append(Leave(invocation=ctx.invocation_id, service=service, key=ctx.key, attempt=attempt,
                            at=time.monotonic(), outcome=outcome))


counter = VirtualObject("LedgerCounter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    """Adds ``n`` to the key's value in one step and returns the new value."""

    async def body(attempt: str) -> int:
        value = await ctx.get("value", type=int) or 0

        async def added() -> int:
            await asyncio.sleep(STEP_S)
            return value + n

        total = await _step(ctx, attempt, "add", added)
        ctx.set("value", total)
        return total

    return await _exclusive(ctx, counter.name, body)


@counter.handler(kind="shared")
async def value(ctx: ObjectSharedContext) -> int:
    """The key's value, read alongside ``add``: the probe of a key that writes nothing."""
    return await ctx.get("value", type=int) or 0


flow = VirtualObject("Flow")


def flow_output(key: str) -> list[str]:
    """What ``Flow.steps`` returns for ``key``: a test compares it with what it got."""
    return [f"{key}/step-{i}" for i in range(FLOW_STEPS)]


@flow.handler()
async def steps(ctx: ObjectContext) -> list[str]:
    """Ten steps, one after another, each returning its own name."""

    async def body(attempt: str) -> list[str]:
        results = []
        for i in range(FLOW_STEPS):
            async def one(i: int = i) -> str:
                await asyncio.sleep(STEP_S)
                return f"{ctx.key}/step-{i}"

            results.append(await _step(ctx, attempt, f"step-{i}", one))
        return results

    return await _exclusive(ctx, flow.name, body)


SERVICES = [counter, flow]
