"""A handler service that breaks the protocol on purpose, to show that the sidecar survives it.

``python -m tests.e2e.rogue rogue --port P``: it answers ``GET /discover`` as the SDK does and
speaks the frame protocol raw over ``GET /connect``. Each invocation's input names what it does
(``{"scenario": NAME, ...}``); see ``SCENARIOS``. Every handler asks for one attempt only, so a
failed attempt shows as ``paused`` with its ``last_error``, never hidden by a retry.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from handler_sdk.protocol import (
    PROTOCOL_VERSION, Awakeable, Command, Discovery, End, HandlerSpec, Heartbeat, RetrySpec, Send, ServiceSpec,
    SetState, Sleep, Start, Suspend, encoder, to_handler_decoder,
)

#: Over the sidecar's frame limit (links.MAX_FRAME_BYTES).
OVERSIZED = 65 * 1024 * 1024 + 1
_NOBODY = "inv_0000000000000000000000000z"  # well-formed, never given to anyone
_ONE_TRY = RetrySpec(max_attempts=1)
DISCOVERY = msgspec.json.encode(Discovery(protocol=PROTOCOL_VERSION, services=[
    ServiceSpec("Rogue", "service", [HandlerSpec("act", "shared", retry=_ONE_TRY)]),
    ServiceSpec("RogueObject", "object", [HandlerSpec("peek", "shared", retry=_ONE_TRY)]),
]))

Ws = web.WebSocketResponse
#: Invocations told to hold, by ID: answered by a later "release", on the socket they came on.
held: dict[str, Ws] = {}


def _ok(invocation_id: str, value: str = "ok") -> bytes:
    return encoder.encode(End(invocation_id, output=msgspec.json.encode(value)))


def _command(invocation_id: str, entry: Any) -> bytes:
    return encoder.encode(Command(invocation_id, index=1, entry=entry))


async def _frames(ws: Ws, *frames: bytes) -> None:
    for frame in frames:
        await ws.send_bytes(frame)


async def _release(ws: Ws, inv: str, args: dict[str, Any]) -> None:
    for held_id, held_ws in list(held.items()):
        del held[held_id]
        await held_ws.send_bytes(_ok(held_id, "released"))
    await ws.send_bytes(_ok(inv))


async def _hold(ws: Ws, inv: str, args: dict[str, Any]) -> None:
    held[inv] = ws


async def _silent(ws: Ws, inv: str, args: dict[str, Any]) -> None:
    pass


async def _text(ws: Ws, inv: str, args: dict[str, Any]) -> None:
    await ws.send_str(f"hello from {inv}")


# A float where an int belongs: msgpack has no integer as large as 2**70.
_FAR_SLEEP = {"t": "Sleep", "wake_at_ms": float(2**70)}

Scenario = Callable[[Ws, str, dict[str, Any]], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {
    "ok": lambda ws, inv, args: _frames(ws, _ok(inv)),
    "hold": _hold,
    "release": _release,
    "silent": _silent,
    "text": _text,
    "garbage": lambda ws, inv, args: _frames(ws, b"\xc1 this is not msgpack"),
    "oversized": lambda ws, inv, args: _frames(ws, b"\x00" * OVERSIZED),
    # Frames for an invocation nobody gave it, and for one that is over: dropped; then its own end.
    "stranger": lambda ws, inv, args: _frames(
        ws, _command(_NOBODY, SetState("x", b"1")), encoder.encode(Heartbeat(_NOBODY)), _ok(_NOBODY, "forged"),
        _ok(args["other"], "hijacked"), _ok(inv)),
    "wrong-index": lambda ws, inv, args: _frames(ws, encoder.encode(Command(inv, index=7, entry=SetState("x", b"1")))),
    "state-from-shared": lambda ws, inv, args: _frames(ws, _command(inv, SetState("x", b"1"))),
    "sleep-2**70": lambda ws, inv, args: _frames(ws, msgspec.msgpack.encode(
        {"t": "Command", "invocation_id": inv, "index": 1, "entry": _FAR_SLEEP})),
    "sleep-max": lambda ws, inv, args: _frames(ws, _command(inv, Sleep(wake_at_ms=2**64 - 1))),
    "sleep-negative": lambda ws, inv, args: _frames(ws, _command(inv, Sleep(wake_at_ms=-1))),
    "send-far": lambda ws, inv, args: _frames(ws, _command(inv, Send("Rogue", "act", delay_ms=2**63))),
    "forged-awakeable": lambda ws, inv, args: _frames(
        ws, _command(inv, Awakeable(id=f"awk_{inv}_1_forged", done=True, value=b'"forged"'))),
    # -1 is the awakeable's index counted from the end; taken as is, no completion would match it.
    "suspend-negative": lambda ws, inv, args: _frames(
        ws, _command(inv, Awakeable(id=f"awk_{inv}_1_secret")), encoder.encode(Suspend(inv, waiting_on=[-1]))),
}


async def _heartbeats() -> None:
    """Held invocations are busy, not silent: the inactivity timeout must not take them."""
    while True:
        await asyncio.sleep(0.5)
        for inv, ws in list(held.items()):
            if not ws.closed:
                await ws.send_bytes(encoder.encode(Heartbeat(inv)))


async def _discover(request: web.Request) -> web.Response:
    return web.Response(body=DISCOVERY, content_type="application/json")


async def _connect(request: web.Request) -> Ws:
    ws = web.WebSocketResponse(compress=False, max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is not WSMsgType.BINARY:
            break
        message = to_handler_decoder.decode(msg.data)
        if type(message) is Start:
            args = msgspec.json.decode(message.input)
            await SCENARIOS[args["scenario"]](ws, message.invocation_id, args)
    for inv in [i for i, held_ws in held.items() if held_ws is ws]:
        del held[inv]
    return ws


async def _serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/discover", _discover)
    app.router.add_get("/connect", _connect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await _heartbeats()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.rogue")
    parser.add_argument("target", help="ignored: the rogue serves its own services")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--heartbeat-interval", type=float, help="ignored")
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
