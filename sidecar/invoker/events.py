"""Event streams: what handlers publish, for ``GET /restate/invocation/{id}/events``.

A stream merges the invocation's journaled ``Publish`` entries (read from the store, so only
durable ones are seen) with the ephemeral events it sent while it ran (kept in memory, the last
``KEEP`` per invocation, for ``LINGER_S`` after it ends). Every event has a place: milestone
``N`` is journal entry N; ephemeral event ``N.S`` is the S-th published after entry N. Places
order the stream and make it resumable: a subscriber that comes back with ``Last-Event-ID`` gets
what comes after, and an attempt that re-runs code publishes under places already seen.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from handler_sdk.protocol import Entry, Failure, Publish

#: Ephemeral events kept per running invocation, for subscribers that connect or reconnect late:
#: the newest ``KEEP``, at most ``KEEP_BYTES`` of them.
KEEP = 1000
KEEP_BYTES = 256 * 1024
#: How long an ended invocation's ephemeral events stay, so that subscribers drain them.
LINGER_S = 10.0


#: The place of a growth warning after journal entry N: ``N.2147483647``, after the handler's
#: own ephemeral events there (a resumable id like theirs).
WARNING_SEQ = 2**31 - 1


class Place(NamedTuple):
    after: int
    seq: int  # -1: the milestone at journal entry ``after`` itself

    @classmethod
    def parse(cls, text: str) -> Place:
        """``"7"`` (a milestone) or ``"7.2"`` (an ephemeral event); ValueError otherwise."""
        index, dot, seq = text.strip().partition(".")
        if not index.isdigit() or (dot and not seq.isdigit()):
            raise ValueError(f"not an event ID: {text!r}")
        return cls(int(index), int(seq) if dot else -1)

    def __str__(self) -> str:
        return str(self.after) if self.seq < 0 else f"{self.after}.{self.seq}"


class StreamEvent(msgspec.Struct, frozen=True):
    id: str
    data: msgspec.Raw  # the published value, JSON

    @property
    def kind(self) -> bytes:
        """Its SSE event name: ``token`` for an ephemeral event (``N.S``), ``milestone`` for a
        journaled one (``N``), ``warning`` for a growth warning (``N.2147483647``), so that
        clients can listen to one kind without parsing ids."""
        if "." not in self.id:
            return b"milestone"
        return b"warning" if self.id.endswith(f".{WARNING_SEQ}") else b"token"


class StreamEnd(msgspec.Struct, frozen=True):
    status: str
    output: msgspec.Raw = msgspec.Raw(b"null")  # the output, JSON
    failure: Failure | None = None


class EventPage(msgspec.Struct, frozen=True):
    """The events after a place, and the end if the invocation is over and nothing follows."""

    events: list[StreamEvent]
    end: StreamEnd | None = None


def milestones(journal: list[Entry], after: Place | None, start: int = 0) -> list[tuple[Place, bytes]]:
    """The ``Publish`` entries placed after ``after`` in ``journal``, whose first entry is ``start``."""
    found = []
    for index, entry in enumerate(journal, start):
        if type(entry) is Publish:
            place = Place(index, -1)
            if after is None or place > after:
                found.append((place, entry.event))
    return found


class EventStreams:
    """Ephemeral events in memory, and subscribers waiting for something new."""

    def __init__(self) -> None:
        #: Per running invocation: how many journal entries are known durable, and their milestones
        #: (a durable prefix never changes, so a page reads only what is new).
        self._durable: dict[str, tuple[int, list[tuple[Place, bytes]]]] = {}
        self._buffers: dict[str, deque[tuple[Place, bytes]]] = {}
        self._buffered_bytes: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def durable(self, invocation_id: str, read_from: Callable[[int], list[Entry]], *,
                running: bool) -> tuple[int, list[tuple[Place, bytes]]]:
        """(how many entries are durable, the milestones among them), reading the journal with
        ``read_from(first index)`` past what was read before; remembered while ``running``."""
        known, found = self._durable.get(invocation_id, (0, []))
        more = read_from(known)
        if more:
            known, found = known + len(more), found + milestones(more, None, known)
        if running:
            self._durable[invocation_id] = (known, found)
        return known, found

    def ephemeral(self, invocation_id: str, place: Place, event: bytes) -> None:
        buffer = self._buffers.get(invocation_id)
        if buffer is None:
            buffer = self._buffers[invocation_id] = deque()
        buffer.append((place, event))
        size = self._buffered_bytes.get(invocation_id, 0) + len(event)
        while len(buffer) > KEEP or (size > KEEP_BYTES and len(buffer) > 1):
            size -= len(buffer.popleft()[1])
        self._buffered_bytes[invocation_id] = size
        self.changed(invocation_id)

    def buffered(self, invocation_id: str, after: Place | None, before: Place | None) -> list[tuple[Place, bytes]]:
        """Ephemeral events placed after ``after`` (and before ``before``); of two at one place,
        the later attempt's."""
        latest = {place: event for place, event in self._buffers.get(invocation_id, ())
                  if (after is None or place > after) and (before is None or place < before)}
        return sorted(latest.items())

    def changed(self, invocation_id: str) -> None:
        """Something was published, or the invocation ended: wake its subscribers."""
        for waiter in self._waiters.pop(invocation_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def finished(self, invocation_id: str) -> None:
        self.changed(invocation_id)
        self._durable.pop(invocation_id, None)
        if invocation_id in self._buffers:
            asyncio.get_running_loop().call_later(LINGER_S, self._forget, invocation_id)

    def _forget(self, invocation_id: str) -> None:
        self._buffers.pop(invocation_id, None)
        self._buffered_bytes.pop(invocation_id, None)

    async def wait(self, invocation_id: str, timeout: float) -> None:
        """Until something changes for ``invocation_id``, or ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(invocation_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            waiters = self._waiters.get(invocation_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[invocation_id]

    def close(self) -> None:
        """Shutting down: wake every subscriber."""
        for invocation_id in list(self._waiters):
            self.changed(invocation_id)
