"""``POST /invoke``: request-response mode, one attempt per request, suspending where a step needs its ack."""

from __future__ import annotations

from typing import Any

import msgspec

from handler_sdk import Context, Service, TerminalError, app
from handler_sdk.protocol import (
    Command, End, Entry, GetState, Input, Run, SetState, Sleep, Start, Suspend, ToSidecar, encoder,
)
from tests.unit.fake_sidecar import untimed
from tests.unit.test_sdk import counter_object

_messages = msgspec.msgpack.Decoder(list[ToSidecar])


async def _invoke(client: Any, service: str, handler: str, journal: list[Entry], *, key: str | None = "k",
                  cancel: bool = False) -> list[ToSidecar]:
    start = Start(invocation_id="inv_rr", attempt=1, service=service, handler=handler, key=key,
                  input=journal[0].value, headers={}, journal=journal, state={} if key else None, seed=1)  # type: ignore[union-attr]
    response = await client.post("/invoke", data=encoder.encode(start),
                                 headers={"x-sidecar-cancel": "1"} if cancel else None)
    assert response.status == 200 and response.content_type == "application/msgpack"
    return [untimed(message) for message in _messages.decode(await response.read())]


async def test_each_step_ends_a_request_and_the_next_request_replays_it(aiohttp_client: Any) -> None:
    calls: list[int] = []
    client = await aiohttp_client(app([counter_object(calls, [])]))
    journal: list[Entry] = [Input(b"5")]
    first = await _invoke(client, "Counter", "add", journal)
    assert first == [Command("inv_rr", 1, GetState(name="count")), Command("inv_rr", 2, Run(name="audit", value=b"50")),
                     Suspend("inv_rr", waiting_on=[2])]
    journal += [m.entry for m in first if isinstance(m, Command)]
    second = await _invoke(client, "Counter", "add", journal)
    assert second == [Command("inv_rr", 3, SetState(name="count", value=b"5")), End("inv_rr", output=b"5")]
    assert calls == [5]  # the step ran once, in the first request


async def test_a_wait_suspends_at_once_and_a_cancel_header_reaches_the_handler(aiohttp_client: Any) -> None:
    napper = Service("Napper")

    @napper.handler()
    async def nap(ctx: Context, seconds: float) -> str:
        try:
            await ctx.sleep(seconds)
        except TerminalError as exc:
            return f"woken: {exc.code}"
        return "rested"

    client = await aiohttp_client(app([napper]))
    messages = await _invoke(client, "Napper", "nap", [Input(b"3600")], key=None)
    assert [type(m) for m in messages] == [Command, Suspend] and isinstance(messages[0].entry, Sleep)  # type: ignore[union-attr]
    cancelled = await _invoke(client, "Napper", "nap", [Input(b"3600"), messages[0].entry], key=None,  # type: ignore[union-attr]
                              cancel=True)
    assert isinstance(cancelled[-1], End) and cancelled[-1].output == b'"woken: 409"'


async def test_a_body_that_is_not_a_start_is_a_400(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app([counter_object([], [])]))
    response = await client.post("/invoke", data=b"\x01\x02")
    assert response.status == 400 and "expected one msgpack Start" in (await response.json())["message"]
