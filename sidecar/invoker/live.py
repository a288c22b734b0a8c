"""What the invoker holds in memory for each unfinished invocation and its current attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from handler_sdk.protocol import Ack, Cancel, Entry, Failure, ToSidecar, encoder

from ..transport.links import Carrier
from .blob_wire import OutgoingBlobs
from ..store import InvocationRecord


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class AttemptSink(Protocol):
    """Where an attempt's frames go, and who hears that it failed (the lifecycle)."""

    def on_message(self, attempt: Attempt, message: ToSidecar) -> None: ...

    def attempt_failed(self, attempt: Attempt, reason: str) -> None: ...


class EntryCompleter(Protocol):
    """Completes a journal entry of a live invocation, durably, then tells its handler."""

    def complete_entry(self, live: Live, index: int, done: Entry, value: bytes | None,
                       failure: Failure | None) -> asyncio.Future[None]: ...


class Live:
    """An unfinished invocation. ``record.status`` here is the truth; the stored one may lag."""

    __slots__ = ("record", "journal", "waiters", "attempt", "retry_handle", "holds_key", "journal_bytes",
                 "state_sizes", "state_bytes")

    def __init__(self, record: InvocationRecord, journal: list[Entry] | None = None) -> None:
        self.record = record
        #: Every entry handed to the store so far; ``None`` until loaded for an attempt.
        self.journal = journal
        self.waiters: list[asyncio.Future[InvocationRecord]] = []
        self.attempt: Attempt | None = None
        #: What starts its next try: a timer, its place among those waiting on its deployment, or
        #: in a limit group's line.
        self.retry_handle: Cancellable | None = None
        self.holds_key = False
        #: Its journal's payload bytes, and its key's state value sizes and their sum (an
        #: exclusive invocation's, as of its attempt's start and its writes since): see ``growth``.
        self.journal_bytes = 0
        self.state_sizes: dict[str, int] = {}
        self.state_bytes = 0

    @property
    def lock_key(self) -> tuple[str, str] | None:
        """The object key this invocation must hold exclusively, if any."""
        record = self.record
        if record.exclusive and record.key is not None:
            return (record.service, record.key)
        return None


class Attempt:
    """One try of one invocation over one link. Once ``over``, its late frames are ignored."""

    __slots__ = ("_sink", "live", "link", "last_activity", "inactivity_timeout_s", "over", "_on_over", "blobs")

    def __init__(self, sink: AttemptSink, live: Live, link: Carrier, inactivity_timeout_s: float,
                 blobs: OutgoingBlobs) -> None:
        self._sink = sink
        self.live = live
        self.link = link
        #: The blobs its ``Start`` referred to: what a ``FetchBlobs`` of it is answered from.
        self.blobs = blobs
        self.inactivity_timeout_s = inactivity_timeout_s
        self.last_activity = time.monotonic()
        self.over = False
        self._on_over: list[Callable[[], None]] | None = None
        link.sessions[live.record.id] = self

    def when_over(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this attempt is over, however it ends (a slot it holds is freed)."""
        if self._on_over is None:
            self._on_over = []
        self._on_over.append(callback)

    def on_message(self, message: ToSidecar) -> None:
        if self.over:
            return
        self.last_activity = time.monotonic()
        self._sink.on_message(self, message)

    def alive(self) -> None:
        """Its handler is busy, though silent (a request-response link says so)."""
        self.last_activity = time.monotonic()

    def fail(self, reason: str) -> None:
        if not self.over:
            self._sink.attempt_failed(self, reason)

    def ack(self, index: int) -> None:
        if not self.over:
            self.last_activity = time.monotonic()
            self.link.send(encoder.encode(Ack(self.live.record.id, index)))

    def detach(self, *, kill: bool = False) -> None:
        """End this attempt on our side; ``kill`` also tells the handler to stop running it."""
        self.over = True
        if self.link.sessions.get(self.live.record.id) is self:
            del self.link.sessions[self.live.record.id]
        if kill:
            self.link.send(encoder.encode(Cancel(self.live.record.id, kill=True)))
        if self.live.attempt is self:
            self.live.attempt = None
        callbacks, self._on_over = self._on_over, None
        for callback in callbacks or ():
            callback()
