"""``client.events(id)``: an invocation's event stream as typed events, reconnecting with
``Last-Event-ID`` when the connection drops, until the stream's ``end``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from ..backoff import delay as backoff_delay
from ..protocol import Failure
from ._errors import ClientError, ConnectionFailed, Overloaded
from ._sse import Message, SSEParser
from ._transport import Transport

#: The sidecar writes a comment line to an idle stream every 10 s; this long without a byte
#: means the connection is gone even if no FIN ever came.
STREAM_IDLE_S = 30.0
#: Pauses between reconnection tries: 0.1 s, doubling, at most 5 s (with jitter), so that the
#: default 10 tries span about half a minute: a sidecar restart, not an outage.
RECONNECT_INITIAL_S, RECONNECT_MULTIPLIER, RECONNECT_MAX_S = 0.1, 2.0, 5.0


class Milestone(msgspec.Struct, frozen=True):
    """A journaled ``ctx.publish(value)``: replayed to every subscriber, in order, once."""

    id: str
    data: Any


class Token(msgspec.Struct, frozen=True):
    """An ephemeral ``ctx.publish(value, ephemeral=True)``: kept by the sidecar for a while only
    (late subscribers may miss some)."""

    id: str
    data: Any


class GrowthWarning(msgspec.Struct, frozen=True):
    """The sidecar's warning that the invocation's journal or state grows past a threshold."""

    id: str
    data: Any


class End(msgspec.Struct, frozen=True):
    """The stream's last event: the invocation's final ``status``, its ``output`` (decoded JSON)
    or its ``failure``."""

    status: str
    output: Any = None
    failure: Failure | None = None


Event = Milestone | Token | GrowthWarning | End

_KINDS: dict[str, type[Milestone | Token | GrowthWarning]] = {
    "milestone": Milestone, "token": Token, "warning": GrowthWarning}
_end_decoder = msgspec.json.Decoder(End)
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class EventStream:
    """An async iterator of an invocation's events; ``async with`` it (or ``aclose()``) to let go
    of the connection when leaving before the end.

    ``last_event_id`` is the ID of the last event it yielded: resume from it in another process
    with ``client.events(id, last_event_id=...)``.
    """

    def __init__(self, transport: Transport, invocation_id: str, *, last_event_id: str | None,
                 max_reconnects: int) -> None:
        if max_reconnects < 0:
            raise ValueError(f"max_reconnects must be 0 or more, got {max_reconnects!r}")
        self.invocation_id = invocation_id
        self.last_event_id = last_event_id
        self._transport = transport
        self._max_reconnects = max_reconnects
        self._events = self._run()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Event, None]:
        failures = 0
        while True:
            try:
                async with contextlib.aclosing(self._connection()) as events:
                    async for event in events:
                        failures = 0
                        yield event
                        if isinstance(event, End):
                            return
                problem = "the stream ended before its end event"
            except (ConnectionFailed, Overloaded) as exc:
                problem = str(exc)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # dropped while reading
                problem = str(exc) or type(exc).__name__
            failures += 1
            if failures > self._max_reconnects:
                raise ConnectionFailed(
                    f"the event stream of {self.invocation_id} dropped and {self._max_reconnects} "
                    f"reconnections failed; the last: {problem}")
            await asyncio.sleep(backoff_delay(failures, RECONNECT_INITIAL_S, RECONNECT_MULTIPLIER,
                                              RECONNECT_MAX_S, floor=0.5))

    async def _connection(self) -> AsyncGenerator[Event, None]:
        """The events of one connection, after ``last_event_id``."""
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        response = await self._transport.open_stream(
            ["restate", "invocation", self.invocation_id, "events"], headers, STREAM_IDLE_S)
        try:
            parser = SSEParser(self.last_event_id)
            async for chunk in response.content.iter_any():
                for message in parser.feed(chunk):
                    event = _event(message, self.invocation_id)
                    if event is None:
                        continue
                    if not isinstance(event, End):
                        self.last_event_id = message.last_id
                    yield event
        finally:
            response.close()  # a stream's connection is not worth keeping for another request


def _event(message: Message, invocation_id: str) -> Event | None:
    """The typed event, or ``None`` for a kind this client does not know (a newer sidecar's)."""
    try:
        if message.event == "end":
            return _end_decoder.decode(message.data)
        kind = _KINDS.get(message.event)
        if kind is None or message.last_id is None:
            return None
        return kind(message.last_id, _any_decoder.decode(message.data))
    except msgspec.DecodeError as exc:
        raise ClientError(None, f"the event stream of {invocation_id} sent an undecodable "
                                f"{message.event} event: {exc}", invocation_id=invocation_id) from None
