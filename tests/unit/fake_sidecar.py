"""A stand-in sidecar for SDK unit tests: speaks the protocol over the real app's /connect."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from handler_sdk import Context, RetryPolicy, Service
from handler_sdk.protocol import (
    Ack, Cancel, Command, Completion, End, Entry, Failure, Input, Pause, Run, Start, ToHandler, ToSidecar, encoder,
    to_sidecar_decoder,
)

DEADLINE = 5.0
FAST = RetryPolicy(max_attempts=3, initial_interval=0.001, max_interval=0.001)
_ids = itertools.count()

barrier_service = Service("Barrier")


@barrier_service.handler()
async def ping(ctx: Context) -> str:
    return "pong"


def untimed(message: ToSidecar) -> ToSidecar:
    """``message`` with its step's ``duration_ms`` dropped: tests compare what steps did, and
    their timings vary from run to run (``test_sdk.py`` checks the durations themselves)."""
    if isinstance(message, Command) and isinstance(message.entry, Run) and message.entry.duration_ms is not None:
        return msgspec.structs.replace(message, entry=msgspec.structs.replace(message.entry, duration_ms=None))
    return message


class FakeSidecar:
    """Plays the sidecar's side of one /connect socket.

    One reader task sorts incoming messages into a queue per invocation, so that tests can
    wait on several invocations at once (a WebSocket allows one reader).
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.closed = asyncio.Event()
        self._queues: dict[str, asyncio.Queue[ToSidecar]] = {}
        self._next_index: dict[str, int] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())
        #: Every Run command as it came, durations included.
        self.timed_runs: list[Run] = []

    async def _read(self) -> None:
        async for frame in self.ws:  # ends when the socket closes
            message = to_sidecar_decoder.decode(frame.data)
            if isinstance(message, Command) and isinstance(message.entry, Run):
                self.timed_runs.append(message.entry)
            self._queue(message.invocation_id).put_nowait(untimed(message))
        self.closed.set()

    def _queue(self, inv: str) -> asyncio.Queue[ToSidecar]:
        return self._queues.setdefault(inv, asyncio.Queue())

    async def aclose(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, DEADLINE)

    async def start(
        self, service: str, handler: str, input: bytes = b"", *, journal: list[Entry] | None = None,
        state: dict[str, bytes] | None = None, key: str | None = "k", seed: int = 7,
        invocation_id: str | None = None, attempt: int = 1, awakeable_key: bytes = b"",
        budget: float | None = None, clock_offset_ms: int = 0,
    ) -> str:
        inv = invocation_id or f"inv_{next(_ids)}"
        entries: list[Entry] = [Input(value=input), *(journal or [])]
        start = Start(
            invocation_id=inv, attempt=attempt, service=service, handler=handler, key=key,
            input=input, headers={"x-test": "1"}, journal=entries,
            state=state if state is not None or key is None else {}, seed=seed, awakeable_key=awakeable_key,
            budget=budget, clock_offset_ms=clock_offset_ms,
        )
        await self.ws.send_bytes(encoder.encode(start))
        self._next_index[inv] = len(entries)
        return inv

    async def send_start(self, start: Start) -> str:
        """Send a ``Start`` made by the test (its journal includes ``Input``)."""
        await self.ws.send_bytes(encoder.encode(start))
        self._next_index[start.invocation_id] = len(start.journal)
        return start.invocation_id

    async def send(self, message: ToHandler) -> None:
        await self.ws.send_bytes(encoder.encode(message))

    async def ack(self, inv: str, index: int) -> None:
        await self.ws.send_bytes(encoder.encode(Ack(invocation_id=inv, index=index)))

    async def complete(
        self, inv: str, index: int, value: bytes | None = None, failure: Failure | None = None,
        clock_offset_ms: int = 0,
    ) -> None:
        completion = Completion(invocation_id=inv, index=index, value=value, failure=failure,
                                clock_offset_ms=clock_offset_ms)
        await self.ws.send_bytes(encoder.encode(completion))

    async def kill(self, inv: str) -> None:
        await self.ws.send_bytes(encoder.encode(Cancel(invocation_id=inv, kill=True)))

    async def cancel(self, inv: str) -> None:
        """Cooperative cancellation: the handler sees TerminalError(409) at its next await."""
        await self.ws.send_bytes(encoder.encode(Cancel(invocation_id=inv)))

    async def next(self, inv: str) -> ToSidecar:
        """The next message for ``inv``; commands are checked to come with dense indices."""
        message = await asyncio.wait_for(self._queue(inv).get(), DEADLINE)
        if isinstance(message, Command):
            assert message.index == self._next_index[inv], "journal indices are dense"
            self._next_index[inv] += 1
        return message

    async def command(self, inv: str) -> Command:
        """The next message for ``inv``, which must be a command."""
        message = await self.next(inv)
        assert isinstance(message, Command), message
        return message

    def idle(self, inv: str) -> bool:
        return self._queue(inv).empty()

    async def finish(self, inv: str) -> tuple[list[Entry], End]:
        """Collect ``inv``'s new commands until its End, acking each Run as the sidecar would."""
        entries, last = await self.until_last(inv)
        assert isinstance(last, End), last
        return entries, last

    async def until_last(self, inv: str) -> tuple[list[Entry], End | Pause]:
        """As ``finish``, up to the attempt's last frame, an End or a Pause."""
        entries: list[Entry] = []
        while True:
            message = await self.next(inv)
            if isinstance(message, End | Pause):
                return entries, message
            if isinstance(message, Command):
                entries.append(message.entry)
                if isinstance(message.entry, Run):
                    await self.ack(inv, message.index)

    async def barrier(self) -> None:
        inv = await self.start("Barrier", "ping", key=None)
        _, end = await self.finish(inv)
        assert end.output == b'"pong"'


Connect = Callable[..., Awaitable[FakeSidecar]]


