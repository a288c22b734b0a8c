"""Domain-level writes, expressed as operations of one :class:`WriteBatch`.

The invoker says what happened ("entry 4 of inv_x is a state write", "inv_x finished"); this module
says which keys of which databases that touches, so no other module knows the key layouts.
"""

from __future__ import annotations

from handler_sdk.protocol import ClearAllState, ClearState, Entry, Input, Run, SetState

from ..clock import now_ms
from . import keys
from .batch import WriteBatch
from .lmdb_store import encode_entry, encode_record
from .records import (
    ChildSpec, CostRecord, DeploymentRecord, EarlyCompletion, IdempotencyRecord, InboxEntry, InvocationRecord,
    OutboxEntry, NamedState, ParkedSend, PromiseRecord, ScheduleRecord, UNFINISHED, WebhookMessage,
)

_EXCLUSIVE = encode_record(InboxEntry(exclusive=True))
_CONCURRENT = encode_record(InboxEntry(exclusive=False))


def outbox_key(entry: OutboxEntry) -> bytes:
    if type(entry) is ChildSpec:
        return b"child/" + entry.record.id.encode()
    if type(entry) is ParkedSend:
        return b"parked/" + (entry.entry.invocation_id or "").encode()
    return keys.bounded(b"resolve/", entry.awakeable_id.encode())  # type: ignore[union-attr]


def outbox_sender(entry: OutboxEntry) -> str:
    """The invocation whose partition holds ``entry`` (its key names the receiver)."""
    if type(entry) is ChildSpec:
        return entry.record.parent_id or ""
    return entry.sender_id  # type: ignore[union-attr]


class Changes(WriteBatch):
    """A write batch with methods named after what they mean."""

    def put_invocation(self, record: InvocationRecord) -> None:
        self.put("invocations", record.id.encode(), encode_record(record))

    def append_entry(self, record: InvocationRecord, index: int, entry: Entry) -> None:
        """Journal ``entry`` and, in the same commit, apply its effect on the key's state or file
        its cost: a step's cost is counted exactly when its entry is durable, and once, since a
        replayed step is not journaled again."""
        self.put("journal", keys.journal_key(record.id, index), encode_entry(entry))
        if type(entry) is Run:
            if entry.cost is not None:
                self.put_cost(record, index, entry, now_ms())
            return
        if record.key is None:
            return
        if type(entry) is SetState:
            self.set_state(record.service, record.key, entry.name, entry.value)
        elif type(entry) is ClearState:
            self.clear_state(record.service, record.key, entry.name)
        elif type(entry) is ClearAllState:
            self.delete_prefix("state", keys.object_prefix(record.service, record.key))

    def put_cost(self, record: InvocationRecord, index: int, run: Run, recorded_ms: int) -> None:
        """File what step ``run`` (entry ``index``) cost, as of ``recorded_ms``."""
        self.put("costs", keys.cost_key(record.service, record.handler, record.key, record.id, index),
                 encode_record(CostRecord.of(record.id, run, recorded_ms)))

    def complete_entry(self, record: InvocationRecord, index: int, entry: Entry) -> None:
        """Rewrite entry ``index`` in place with its result (a fired timer, a resolved awakeable)."""
        self.put("journal", keys.journal_key(record.id, index), encode_entry(entry))

    def add_timer(self, due_ms: int, invocation_id: str, index: int) -> None:
        self.put("timers", keys.timer_key(due_ms, invocation_id, index), b"")

    def remove_timer(self, due_ms: int, invocation_id: str, index: int) -> None:
        self.delete("timers", keys.timer_key(due_ms, invocation_id, index))

    def put_early_completion(self, invocation_id: str, index: int, early: EarlyCompletion) -> None:
        self.put("completions", keys.journal_key(invocation_id, index), encode_record(early))

    def remove_early_completion(self, invocation_id: str, index: int) -> None:
        self.delete("completions", keys.journal_key(invocation_id, index))

    def put_promise(self, service: str, key: str, name: str, promise: PromiseRecord) -> None:
        self.put("promises", keys.state_key(service, key, name), encode_record(promise))

    def put_outbox(self, entry: OutboxEntry) -> None:
        self.home = outbox_sender(entry)
        self.put("outbox", outbox_key(entry), encode_record(entry))

    def remove_outbox(self, entry: OutboxEntry) -> None:
        self.home = outbox_sender(entry)
        self.delete("outbox", outbox_key(entry))

    def put_webhook(self, raw_key: bytes, message: WebhookMessage) -> None:
        """File a webhook for one receiver (``keys.webhook_key``)."""
        self.put("webhook_outbox", raw_key, encode_record(message))

    def remove_webhook(self, raw_key: bytes) -> None:
        self.delete("webhook_outbox", raw_key)

    def create(self, record: InvocationRecord, input_value: bytes, raw_idempotency_key: bytes | None) -> None:
        """A new invocation: its record, its place in line and in the list's indexes, its input,
        its idempotency key."""
        self.put_invocation(record)
        self.enqueue(record)
        self.put("by_status", keys.status_key(record.listed_as, record.id), b"")
        for raw_key in keys.target_keys(record.service, record.key, record.id):
            self.put("by_target", raw_key, b"")
        self.append_entry(record, 0, Input(input_value))
        if raw_idempotency_key is not None:
            self.put_idempotency(raw_idempotency_key, record.id)

    def set_state(self, service: str, key: str, name: str, value: bytes) -> None:
        raw_key, name_hashed = keys.state_slot(service, key, name)
        self.put("state", raw_key, encode_record(NamedState(name=name, value=value)) if name_hashed else value)

    def clear_state(self, service: str, key: str, name: str) -> None:
        self.delete("state", keys.state_key(service, key, name))

    def enqueue(self, record: InvocationRecord) -> None:
        self.put("inbox", keys.inbox_key(record.service, record.key, record.inbox_seq, record.id),
                 _EXCLUSIVE if record.exclusive else _CONCURRENT)

    def put_idempotency(self, raw_key: bytes, invocation_id: str) -> None:
        self.put("idempotency", raw_key, encode_record(IdempotencyRecord(invocation_id=invocation_id)))

    def finish(self, record: InvocationRecord) -> None:
        """``record`` has reached a final status: leave the inbox, join the retention index, move
        to its final status in the list's index (the only move an entry there makes)."""
        assert record.completed_ms is not None
        self.put_invocation(record)
        self.delete("inbox", keys.inbox_key(record.service, record.key, record.inbox_seq, record.id))
        self.put("finished", keys.finished_key(record.completed_ms, record.id), b"")
        self.delete("by_status", keys.status_key(UNFINISHED, record.id))
        self.put("by_status", keys.status_key(record.listed_as, record.id), b"")

    def purge(self, record: InvocationRecord, idempotency_raw_key: bytes | None) -> None:
        """Forget a finished invocation: its record, journal, costs, retention entry and the idempotency
        key it holds (``None``: it holds none, or no longer: a restart took it over)."""
        self.delete("invocations", record.id.encode())
        self.delete("by_status", keys.status_key(record.listed_as, record.id))
        for raw_key in keys.target_keys(record.service, record.key, record.id):
            self.delete("by_target", raw_key)
        self.delete_prefix("journal", keys.journal_prefix(record.id))
        self.delete_prefix("completions", keys.journal_prefix(record.id))
        self.delete_prefix("costs", keys.costs_prefix(record.service, record.handler, record.key, record.id))
        if record.completed_ms is not None:
            self.delete("finished", keys.finished_key(record.completed_ms, record.id))
        if idempotency_raw_key is not None:
            self.delete("idempotency", idempotency_raw_key)
        if idempotency_raw_key is not None and record.handler_kind == "workflow" and record.key is not None:
            # The key may run again: it starts from nothing, not from the old run's state and promises.
            self.delete_prefix("state", keys.object_prefix(record.service, record.key))
            self.delete_prefix("promises", keys.object_prefix(record.service, record.key))

    def put_deployment(self, record: DeploymentRecord) -> None:
        self.put("deployments", record.id.encode(), encode_record(record))

    def delete_deployment(self, deployment_id: str) -> None:
        self.delete("deployments", deployment_id.encode())

    def put_schedule(self, record: ScheduleRecord) -> None:
        self.put("schedules", keys.schedule_key(record.name), encode_record(record))

    def delete_schedule(self, name: str) -> None:
        self.delete("schedules", keys.schedule_key(name))
