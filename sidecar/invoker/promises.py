"""Durable promises: a workflow's named values that its run awaits and its handlers complete.

All of a workflow key's handlers live in that key's partition, so one worker owns each promise
and keeps it in memory (loaded from the store on first use), writing every change in the same
batch as the entry that made it.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from handler_sdk.protocol import CompletePromise, Failure, GetPromise, PeekPromise

from ..store import Changes, Store
from ..store.records import PromiseRecord
from .live import EntryCompleter, Live
from .table import InvocationTable

PromiseEntry = GetPromise | PeekPromise | CompletePromise


class Promises:
    def __init__(self, store: Store, table: InvocationTable, completer: EntryCompleter) -> None:
        self._store = store
        self._table = table
        self._completer = completer
        self._known: dict[tuple[str, str, str], PromiseRecord] = {}

    def forget(self, service: str, key: str) -> None:
        """A purged workflow run's promises are gone from the store: drop them here too."""
        for known in [k for k in self._known if k[0] == service and k[1] == key]:
            del self._known[known]

    def _promise(self, service: str, key: str, name: str) -> PromiseRecord:
        found = self._known.get((service, key, name))
        if found is None:
            found = self._store.get_promise(service, key, name) or PromiseRecord()
            self._known[(service, key, name)] = found
        return found

    def journaled(self, live: Live, index: int, entry: PromiseEntry, changes: Changes) -> Callable[[], object] | None:
        """Apply a promise entry; what to do once its batch is submitted (complete entries)."""
        record = live.record
        if record.key is None:
            problem = Failure(400, "durable promises belong to workflows")
            done = msgspec.structs.replace(entry, done=True, failure=problem)
            return lambda: self._completer.complete_entry(live, index, done, None, problem)
        promise = self._promise(record.service, record.key, entry.name)
        kind = type(entry)
        if kind is GetPromise:
            if promise.done:
                done = msgspec.structs.replace(entry, done=True, value=promise.value, failure=promise.failure)
                return lambda: self._completer.complete_entry(live, index, done, promise.value, promise.failure)
            promise.waiters.append((record.id, index))
            changes.put_promise(record.service, record.key, entry.name, promise)
            return None
        if kind is PeekPromise:
            value, failure = (promise.value, promise.failure) if promise.done else (None, None)
            done = msgspec.structs.replace(entry, done=True, value=value, failure=failure)
            return lambda: self._completer.complete_entry(live, index, done, value, failure)
        if promise.done:
            outcome = Failure(409, f"promise {entry.name!r} was already completed")
            refused = msgspec.structs.replace(entry, done=True, outcome=outcome)
            return lambda: self._completer.complete_entry(live, index, refused, None, outcome)
        waiters, promise.waiters = promise.waiters, []
        promise.done, promise.value, promise.failure = True, entry.value, entry.failure
        changes.put_promise(record.service, record.key, entry.name, promise)
        accepted = msgspec.structs.replace(entry, done=True)

        def after() -> None:
            self._completer.complete_entry(live, index, accepted, None, None)
            for waiter_id, waiter_index in waiters:
                self._wake(waiter_id, waiter_index, promise)

        return after

    def _wake(self, invocation_id: str, index: int, promise: PromiseRecord) -> None:
        waiter = self._table.active.get(invocation_id)
        if waiter is None or waiter.record.finished:
            return
        journal = self._table.journal_of(waiter)
        if index < len(journal) and type(journal[index]) is GetPromise and not journal[index].done:  # type: ignore[union-attr]
            done = msgspec.structs.replace(journal[index], done=True, value=promise.value, failure=promise.failure)
            self._completer.complete_entry(waiter, index, done, promise.value, promise.failure)
