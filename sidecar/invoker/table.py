"""The invocation table: what a worker knows of its unfinished invocations beyond the store.

The live invocations by ID, the key locks they (and operators' state edits) queue on, the
idempotency slots taken by invocations not committed yet, and the inbox clock that orders a
key's arrivals. Every other part of the invoker reads and changes these through this table.
"""

from __future__ import annotations

from handler_sdk.protocol import Entry

from ..clock import InboxClock
from ..store import Changes, InvocationRecord, Store
from ..store import keys as store_keys
from .keylocks import KeyLocks
from .live import Live
from .state_edits import StateEdit


class InvocationNotFound(LookupError):
    pass


class InvocationTable:
    def __init__(self, store: Store) -> None:
        self._store = store
        #: Unfinished invocations, and finished ones until their end is durable.
        self.active: dict[str, Live] = {}
        self.keys: KeyLocks[Live | StateEdit] = KeyLocks()
        self.inbox_clock = InboxClock()
        #: Idempotency keys whose invocation is accepted but not yet committed: a concurrent
        #: repeat must attach to it, and the store cannot tell it yet.
        self._idempotency_inflight: dict[bytes, str] = {}

    def current(self, invocation_id: str) -> InvocationRecord:
        """The record as it stands now (live status for unfinished invocations)."""
        live = self.active.get(invocation_id)
        if live is not None:
            return live.record
        record = self._store.get_invocation(invocation_id)
        if record is None:
            raise InvocationNotFound(invocation_id)
        return record

    def journal_of(self, live: Live) -> list[Entry]:
        """``live``'s journal: the one in memory during an attempt, else the committed one."""
        return live.journal if live.journal is not None else self._store.read_journal(live.record.id)

    def create_into(self, changes: Changes, record: InvocationRecord, input_value: bytes,
                    raw_idempotency_key: bytes | None) -> None:
        """Create ``record`` in ``changes``, last in its key's inbox. Only the worker that owns its
        partition does this, so a key's inbox is in the order its owner accepted invocations."""
        record.inbox_seq = self.inbox_clock.next()
        changes.create(record, input_value, raw_idempotency_key)

    # --- idempotency --------------------------------------------------------------------------------

    def hold_slot(self, slot: bytes, invocation_id: str) -> None:
        """``slot`` is taken by an invocation not yet committed: a concurrent repeat must see it."""
        self._idempotency_inflight[slot] = invocation_id

    def release_slot(self, slot: bytes) -> None:
        self._idempotency_inflight.pop(slot, None)

    def existing(self, raw_idempotency_key: bytes) -> str | None:
        """The invocation already holding this idempotency slot, if any."""
        existing = self._idempotency_inflight.get(raw_idempotency_key)
        if existing is None:
            found = self._store.get_idempotency(raw_idempotency_key)
            existing = found.invocation_id if found else None
        if existing is not None and (existing in self.active or self._store.get_invocation(existing)):
            return existing
        return None

    def find_by_idempotency_key(self, service: str, key: str | None, handler: str, idem: str) -> str:
        raw = store_keys.idempotency_key(service, key, handler, idem)
        existing = self._idempotency_inflight.get(raw)
        if existing is None:
            found = self._store.get_idempotency(raw)
            if found is None:
                raise InvocationNotFound(idem)
            existing = found.invocation_id
        return existing
