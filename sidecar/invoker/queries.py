"""What callers and operators ask of invocations: their outcome, why they are where they are,
and the events they published."""

from __future__ import annotations

import asyncio
from functools import partial

import msgspec

from handler_sdk.protocol import Publish

from ..clock import iso_ms, now_ms
from ..store import InvocationRecord, Store
from .events import WARNING_SEQ, EventPage, EventStreams, Place, StreamEnd, StreamEvent
from .table import InvocationNotFound, InvocationTable


_warning_encoder = msgspec.json.Encoder()


def _warnings(record: InvocationRecord, after: Place | None) -> list[tuple[Place, bytes]]:
    """The record's growth warnings placed after ``after``, as events."""
    placed = [(Place(warning.index, WARNING_SEQ), warning) for warning in record.warnings]
    return [(place, _warning_encoder.encode(warning)) for place, warning in placed if after is None or place > after]


def record_reason(record: InvocationRecord) -> str | None:
    """Why the invocation is where it is, as far as its record alone tells (``None``: its status
    says it all, or only the worker that runs it knows more): what the invocation list shows."""
    if record.status == "pending" and record.attempts == 0 and record.start_at_ms is not None \
            and record.start_at_ms > now_ms():
        return f"delayed: starts at {iso_ms(record.start_at_ms)}"
    if record.status == "backing-off":
        if record.next_retry_ms is None:  # it waits on its deployment: see reachability.py
            return f"backing off: {record.last_error}"
        return f"backing off after attempt {record.attempts} until {iso_ms(record.next_retry_ms)}: " \
               f"{record.last_error}"
    if record.status == "paused":
        if record.pause_reason is not None:
            return record.pause_reason
        return f"paused after {record.attempts} attempts: {record.last_error}"
    if record.status == "suspended":
        return f"suspended, waiting on journal entry {', '.join(map(str, record.waiting_on))}"
    return None


class InvocationQueries:
    def __init__(self, store: Store, table: InvocationTable, events: EventStreams) -> None:
        self._store = store
        self._table = table
        self._events = events

    async def outcome(self, invocation_id: str) -> InvocationRecord:
        """Wait until the invocation has finished; its final record."""
        live = self._table.active.get(invocation_id)
        if live is None:
            record = self._store.get_invocation(invocation_id)
            if record is None:
                raise InvocationNotFound(invocation_id)
            return record
        waiter: asyncio.Future[InvocationRecord] = asyncio.get_running_loop().create_future()
        live.waiters.append(waiter)
        try:
            return await waiter
        finally:
            if waiter.cancelled() and waiter in live.waiters:  # the caller gave up waiting
                live.waiters.remove(waiter)

    def reason(self, invocation_id: str) -> str:
        """Why the invocation is where it is, in one sentence."""
        record = self._table.current(invocation_id)
        live = self._table.active.get(invocation_id)
        said = record_reason(record)
        if said is not None:
            return said
        if record.status == "pending" and live is not None and live.lock_key is not None:
            ahead = self._table.keys.ahead_of(live.lock_key, live)
            return f"queued behind {ahead + 1} invocation(s) on key {record.key!r}"
        if record.status == "running" and live is not None and live.journal is not None:
            return f"running attempt {record.attempts}, journal at entry {len(live.journal)}"
        return record.status

    async def event_page(self, invocation_id: str, after: Place | None, wait_s: float) -> EventPage:
        """What ``invocation_id`` published after ``after`` (waiting up to ``wait_s`` for
        something, if nothing yet), and its end once it has ended and nothing more follows."""
        while True:
            record = self._table.current(invocation_id)  # InvocationNotFound for an unknown one
            over = invocation_id not in self._table.active  # its end is durable
            durable, published = self._events.durable(
                invocation_id, partial(self._store.read_journal, invocation_id), running=not over)
            found = sorted([m for m in published if after is None or m[0] > after] + self._events.buffered(
                invocation_id, after, before=self._first_pending_milestone(invocation_id, durable)) + _warnings(record, after))
            if found or over or wait_s <= 0:
                break
            await self._events.wait(invocation_id, wait_s)
            wait_s = 0
        events = [StreamEvent(str(place), msgspec.Raw(event)) for place, event in found]
        end = None
        if over and not found:
            end = StreamEnd(record.status, msgspec.Raw(record.output or b"null"), record.failure)
        return EventPage(events, end)

    def _first_pending_milestone(self, invocation_id: str, durable: int) -> Place | None:
        """The place of the first milestone journaled but not durable yet: ephemeral events
        published after it wait until it can go first."""
        live = self._table.active.get(invocation_id)
        journal = live.journal if live is not None else None
        if journal is not None:
            for index in range(durable, len(journal)):
                if type(journal[index]) is Publish:
                    return Place(index, -1)
        return None
