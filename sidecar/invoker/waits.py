"""Durable waits: timers and awakeables, and delivering their completions.

A completion rewrites the waiting entry in the journal (``done`` set, result filled in) and only
once that is durable does it reach the handler: as a ``Completion`` frame when an attempt is
running, or by starting a new attempt when the invocation is suspended waiting on that entry.
Timers live in the store by due time and are reloaded at start-up; a resolution that arrives
before its awakeable was journaled is stored and applied when the entry appears.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from handler_sdk.protocol import Awakeable, Completion, Entry, Failure, Sleep, encoder

from ..clock import call_at_ms, offset_ms
from ..store import Changes, Store
from ..store.records import EarlyCompletion
from .awakeable_ids import minted, parse_awakeable_id
from .commits import recheck_if_cancelled
from .live import Live
from .table import InvocationTable

log = logging.getLogger(__name__)

#: A fired timer whose completion could not be written (no room) fires again this much later.
_REFIRE_S = 1.0


class AwakeableNotFound(LookupError):
    pass


class AwakeableCompleted(Exception):
    """The awakeable was already resolved or rejected: the first completion stands."""


class DurableWaits:
    def __init__(self, store: Store, table: InvocationTable, resume: Callable[[Live], None]) -> None:
        self._store = store
        self._table = table
        #: Starts a new attempt of a suspended invocation whose wait is over (the lifecycle's).
        self._resume = resume
        self._secret = store.awakeable_secret
        #: Resolutions that came before their awakeable entry, by (invocation ID, index).
        self._early: dict[tuple[str, int], EarlyCompletion] = {}
        self._scheduled = 0

    def recover(self, owns: Callable[[str], bool]) -> None:
        for due_ms, invocation_id, index in self._store.timers():
            if owns(invocation_id):
                self.schedule_timer(due_ms, invocation_id, index)
        for invocation_id, index, early in self._store.early_completions():
            if owns(invocation_id):
                self._early[(invocation_id, index)] = early

    # --- entries the handler journaled ------------------------------------------------------------

    def journaled(self, live: Live, index: int, entry: Entry, changes: Changes) -> None:
        """Called as a completable entry joins ``changes``: file its timer, or apply an early resolution.

        Whatever this schedules is submitted after ``changes`` (one writer, submit order), so a
        completion is never durable before the entry it completes."""
        if type(entry) is Sleep:
            changes.add_timer(entry.wake_at_ms, live.record.id, index)
            self.schedule_timer(entry.wake_at_ms, live.record.id, index)
        elif type(entry) is Awakeable:
            early = self._early.pop((live.record.id, index), None)
            if early is not None and early.awakeable_id == entry.id:
                asyncio.get_running_loop().call_soon(
                    self._complete_awakeable, live, index, entry, early.value, early.failure)
            elif early is not None:  # someone guessed at an ID that never existed: drop it
                forget = Changes()
                forget.remove_early_completion(live.record.id, index)
                self._store.submit(forget)

    # --- timers -----------------------------------------------------------------------------------

    def pending_timers(self) -> int:
        """Timers scheduled here and not yet fired (or firing again after a failed write)."""
        return self._scheduled

    def schedule_timer(self, due_ms: int, invocation_id: str, index: int) -> None:
        self._scheduled += 1
        call_at_ms(due_ms, self._fire, due_ms, invocation_id, index)

    def _fire(self, due_ms: int, invocation_id: str, index: int) -> None:
        self._scheduled -= 1
        live = self._table.active.get(invocation_id)
        if live is None or live.record.finished:  # it ended (killed, purged): the timer is moot
            stale = Changes()
            stale.remove_timer(due_ms, invocation_id, index)
            self._store.submit(stale)
            return
        changes = Changes()
        changes.remove_timer(due_ms, invocation_id, index)
        self.complete(live, index, Sleep(wake_at_ms=due_ms, done=True), None, None, changes).add_done_callback(
            partial(self._fired, due_ms, invocation_id, index))

    def _fired(self, due_ms: int, invocation_id: str, index: int, written: asyncio.Future[None]) -> None:
        """A timer whose completion could not be written fires again a little later."""
        if not written.cancelled() and written.exception() is not None:
            self._scheduled += 1
            asyncio.get_running_loop().call_later(_REFIRE_S, self._fire, due_ms, invocation_id, index)

    # --- awakeables -------------------------------------------------------------------------------

    def resolve(self, awakeable_id: str, value: bytes | None, failure: Failure | None) -> asyncio.Future[None]:
        """Complete an awakeable (or keep the resolution until it exists); the future: durable."""
        try:
            invocation_id, index = parse_awakeable_id(awakeable_id)
        except ValueError:
            raise AwakeableNotFound(awakeable_id) from None
        live = self._table.active.get(invocation_id)
        if live is None or live.record.finished:
            raise AwakeableNotFound(awakeable_id)
        journal = self._table.journal_of(live)
        if index >= len(journal):
            # Kept only if we minted it: a guessed ID must not grow the store. (An ID not minted
            # here that matches its journaled entry, below, was handed out before IDs were signed.)
            if not minted(self._secret, awakeable_id):
                raise AwakeableNotFound(awakeable_id)
            if (invocation_id, index) in self._early:
                raise AwakeableCompleted(awakeable_id)
            early = EarlyCompletion(awakeable_id=awakeable_id, value=value, failure=failure)
            self._early[(invocation_id, index)] = early
            changes = Changes()
            changes.put_early_completion(invocation_id, index, early)
            return self._store.submit(changes)
        entry = journal[index]
        if type(entry) is not Awakeable or entry.id != awakeable_id:
            raise AwakeableNotFound(awakeable_id)
        if entry.done:
            raise AwakeableCompleted(awakeable_id)
        return self._complete_awakeable(live, index, entry, value, failure)

    def _complete_awakeable(
        self, live: Live, index: int, entry: Awakeable, value: bytes | None, failure: Failure | None,
    ) -> asyncio.Future[None]:
        changes = Changes()
        changes.remove_early_completion(live.record.id, index)
        done = Awakeable(id=entry.id, done=True, value=value, failure=failure)
        return self.complete(live, index, done, value, failure, changes)

    # --- delivering -------------------------------------------------------------------------------

    def complete_entry(
        self, live: Live, index: int, done: Entry, value: bytes | None, failure: Failure | None,
    ) -> asyncio.Future[None]:
        """Entry ``index`` of ``live`` is done (a call returned, a promise completed): journal
        that, then tell the handler (or resume it)."""
        return self.complete(live, index, done, value, failure, Changes())

    def complete(
        self, live: Live, index: int, done: Entry, value: bytes | None, failure: Failure | None, changes: Changes,
    ) -> asyncio.Future[None]:
        """Make entry ``index`` durably done, then hand the result to the handler."""
        changes.complete_entry(live.record, index, done)
        written = self._store.submit(changes)
        written.add_done_callback(partial(self._deliver, live, index, done, value, failure))
        return written

    def _deliver(
        self, live: Live, index: int, done: Entry, value: bytes | None, failure: Failure | None,
        written: asyncio.Future[None],
    ) -> None:
        if recheck_if_cancelled(self._store, written, partial(self._deliver, live, index, done, value, failure)):
            return
        if written.exception() is not None or live.record.finished:
            return
        if live.journal is not None and index < len(live.journal):
            live.journal[index] = done
        attempt = live.attempt
        if attempt is not None and not attempt.over:
            attempt.link.send(encoder.encode(Completion(live.record.id, index, value, failure, offset_ms())))
        elif live.record.status == "suspended" and index in live.record.waiting_on:
            self._resume(live)


def is_done(entry: Entry) -> bool:
    return bool(getattr(entry, "done", False))
