"""Handlers with large values, for the end-to-end tests of blobs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random

import msgspec

from handler_sdk import ObjectContext, TerminalError, VirtualObject
from tests.e2e.handlers import _post

bulky = VirtualObject("Bulky")


class Spec(msgspec.Struct):
    size: int  # characters of each value
    copies: int = 1
    seed: int = 0
    gate: str | None = None  # hang in a step named so on its first try, until a process is killed
    state: bool = False  # keep the first value in state too
    nap: float = 0.0  # sleep this long after the values (a handler that suspends at once replays then)


def text(size: int, seed: int) -> str:
    """``size`` characters that compress about as much as base64 text does (to 3/4)."""
    return base64.b64encode(random.Random(seed).randbytes(size * 3 // 4 + 3)).decode()[:size]


def digest(value: str) -> str:
    """The SHA-256 the sidecar files ``value`` under: that of its JSON encoding."""
    return hashlib.sha256(msgspec.json.encode(value)).hexdigest()


@bulky.handler()
async def make(ctx: ObjectContext, spec: Spec) -> dict[str, object]:
    """``copies`` steps returning the same large value; what the code saw of them, by digest."""
    values = [await ctx.run(f"make{n}", text, spec.size, spec.seed) for n in range(spec.copies)]
    if spec.state:
        ctx.set("big", values[0])
    if spec.nap:
        await ctx.sleep(spec.nap)
    if spec.gate is not None:
        gate = spec.gate

        async def hang() -> str:
            if await _post(f"/incr/gate-{gate}") == 1:
                await asyncio.sleep(3600)
            return "through"

        await ctx.run("gate", hang)
    seen = await ctx.get("big") if spec.state else None
    return {"digests": sorted({digest(v) for v in values}), "state": None if seen is None else digest(seen)}


@bulky.handler()
async def oversize(ctx: ObjectContext, size: int) -> dict[str, list[object]]:
    """A step value and a state value over ``max_payload_bytes``: what each refusal said."""
    refused: dict[str, list[object]] = {}
    try:
        await ctx.run("huge", text, size, 1)
    except TerminalError as exc:
        refused["step"] = [exc.code, exc.message]
    try:
        ctx.set("huge", text(size, 1))
    except TerminalError as exc:
        refused["state"] = [exc.code, exc.message]
    return refused


SERVICES = [bulky]
