"""Calls between handlers: a ``Call`` or ``Send`` entry starts a child invocation, exactly once.

When the child's partition is this worker's, the child is created in the same write batch as the
entry that asks for it, so a crash can never keep one without the other. When another worker
owns it, the batch holds the child in an outbox instead, and the owner is handed it; the outbox
entry goes once the owner has it durably, and is handed over again after a crash. A finished
child completes its caller's ``Call`` entry; a caller recovering from a crash also pulls the
results of children that finished meanwhile (the store is shared, so it can read them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

import msgspec

from handler_sdk.protocol import Call, Failure, Input, Send

from ..clock import now_ms
from ..ids import partition_of_id
from ..process.partitions import PartitionMap
from ..transport.registry import Registry
from ..store import Changes, InvocationRecord, Store
from ..store.records import ChildSpec, OutboxEntry, ParkedSend, ResolutionSpec
from .background import Background
from .commits import recheck_if_cancelled
from .factory import RecordFactory
from .idempotency import idempotency_slot
from .live import EntryCompleter, Live
from .peers import Peers
from .table import InvocationTable

log = logging.getLogger(__name__)


class Creation(Protocol):
    """How a child invocation comes to life (the lifecycle's)."""

    def accept(self, live: Live, slot: bytes | None = None) -> None: ...

    async def create(self, live: Live, changes: Changes, slot: bytes | None) -> None: ...


class Calls:
    def __init__(
        self, *, store: Store, registry: Registry, partitions: PartitionMap, table: InvocationTable,
        factory: RecordFactory, creation: Creation, completer: EntryCompleter, background: Background,
        peers: Peers | None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._partitions = partitions
        self._table = table
        self._factory = factory
        self._creation = creation
        self._completer = completer
        self._background = background
        self._peers = peers

    # --- a handler asks for a call ----------------------------------------------------------------

    def journaled(self, live: Live, index: int, entry: Call | Send, changes: Changes) -> tuple[
            Call | Send, Callable[[], object] | None]:
        """The entry to journal (naming its child) and what to do once the batch is submitted."""
        problem = self._refusal(live, entry)
        if problem is not None:
            if type(entry) is Send:
                if problem.code == 404:  # not registered (yet): kept until it is
                    return self._park(live, index, entry, changes), None
                log.warning("%s: a send was dropped: %s", live.record.id, problem.message)
                return entry, None
            done = msgspec.structs.replace(entry, done=True, failure=problem)
            return entry, lambda: self._completer.complete_entry(live, index, done, None, problem)
        route = self._registry.route(entry.service, entry.handler)
        assert route is not None
        partition = self._child_partition(live, entry)
        delay_s = entry.delay_ms / 1000 if type(entry) is Send else 0.0
        child = self._factory.new_record(route, entry.key, headers={}, partition=partition, delay_s=delay_s,
                                         caller=live.record)
        child.parent_id, child.parent_index, child.reply = live.record.id, index, type(entry) is Call
        # Only a caller that waits holds its key for the callee: a send passes on no chain.
        child.call_path = _path_below(live.record) if type(entry) is Call else []
        named = msgspec.structs.replace(entry, invocation_id=child.id)
        slot = idempotency_slot(child)
        if self._partitions.owns(partition) and slot is not None \
                and (existing := self._table.existing(slot)) is not None:
            return self._duplicate_run(live, index, named, existing)
        return named, self._place(child, entry.input, changes)

    def _child_partition(self, live: Live, entry: Call | Send) -> int:
        """The callee's key's partition; a keyless callee runs next to its caller."""
        partition = self._partitions.of_target(entry.service, entry.key, entry.handler, None)
        return partition if partition is not None else partition_of_id(live.record.id) or 0

    def _place(self, child: InvocationRecord, input_value: bytes, changes: Changes) -> Callable[[], None]:
        """Create ``child`` in ``changes`` (in its owner's outbox if another worker owns it);
        what to do once ``changes`` is submitted."""
        caller = partition_of_id(child.parent_id or "") or 0
        if self._partitions.shares_batches(caller, partition_of_id(child.id) or 0):
            slot = idempotency_slot(child)
            self._table.create_into(changes, child, input_value, slot)
            return lambda: self._creation.accept(Live(child, [Input(input_value)]), slot)
        spec = ChildSpec(record=child, input=input_value, seq=self._table.inbox_clock.next())
        changes.put_outbox(spec)
        return lambda: self._hand_over_once_durable(spec)

    # --- sends to targets not registered yet ------------------------------------------------------

    def _park(self, live: Live, index: int, entry: Send, changes: Changes) -> Send:
        """Journal the send with its child's ID, and keep it until its target is registered."""
        named = msgspec.structs.replace(
            entry, invocation_id=self._factory.new_invocation_id(self._child_partition(live, entry)))
        changes.put_outbox(ParkedSend(sender_id=live.record.id, index=index, entry=named, journaled_ms=now_ms(),
                                      seq=self._table.inbox_clock.next()))
        log.warning("%s: send to %s/%s kept until a deployment that has it is registered",
                    live.record.id, entry.service, entry.handler)
        return named

    def deliver_parked(self, owns: Callable[[str], bool]) -> None:
        """Deployments changed: make the parked sends (of senders ``owns`` says are ours) whose
        target is registered now."""
        for pending in sorted(self._store.outbox(), key=_made_order):
            if type(pending) is ParkedSend and owns(pending.sender_id):
                self._unpark(pending)

    def _unpark(self, parked: ParkedSend) -> None:
        entry, child_id = parked.entry, parked.entry.invocation_id or ""
        route = self._registry.route(entry.service, entry.handler)
        if route is None:
            return  # still not registered
        changes = Changes()
        changes.remove_outbox(parked)
        after: Callable[[], object] | None = None
        keyed = route.service.kind != "service"
        if keyed != (entry.key is not None):
            log.warning("%s: a parked send was dropped: %s is a %s", parked.sender_id, entry.service, route.service.kind)
        elif child_id not in self._table.active and self._store.get_invocation(child_id) is None:
            due_ms = (parked.journaled_ms or now_ms()) + entry.delay_ms  # a delay still to wait, if any
            child = self._factory.new_record(route, entry.key, headers={}, partition=partition_of_id(child_id) or 0,
                                             delay_s=max(0, due_ms - now_ms()) / 1000, invocation_id=child_id)
            child.parent_id, child.parent_index, child.reply = parked.sender_id, parked.index, False
            slot = idempotency_slot(child)
            if slot is None or self._table.existing(slot) is None:  # a workflow that ran: dropped, as a repeat
                after = self._place(child, entry.input, changes)
        self._store.submit(changes)
        if after is not None:
            after()

    def _hand_over_once_durable(self, spec: ChildSpec) -> None:
        """Hand the child over only once the caller's entry is durable: were the caller's batch
        lost in a crash, its replay would ask for a new child and the old one would run too.
        An empty batch commits after the caller's (submit order): it marks the moment."""
        self._store.submit(Changes()).add_done_callback(partial(self._hand_over_if_durable, spec))

    def _hand_over_if_durable(self, spec: ChildSpec, written: asyncio.Future[None]) -> None:
        if not recheck_if_cancelled(self._store, written, partial(self._hand_over_if_durable, spec)) \
                and written.exception() is None:
            self._hand_over(spec)

    def _duplicate_run(self, live: Live, index: int, entry: Call | Send, existing: str) -> tuple[
            Call | Send, Callable[[], object] | None]:
        problem = Failure(409, f"workflow {entry.service}/{entry.key} already ran (invocation {existing})")
        if type(entry) is Send:
            return entry, None
        done = msgspec.structs.replace(entry, done=True, failure=problem)
        return entry, lambda: self._completer.complete_entry(live, index, done, None, problem)

    def _refusal(self, live: Live, entry: Call | Send) -> Failure | None:
        found = self._registry.service(entry.service) or self._registry.reload().service(entry.service)
        if found is None:
            return Failure(404, f"unknown service {entry.service!r}")
        keyed = found[1].kind != "service"
        if keyed != (entry.key is not None):
            return Failure(400, f"{entry.service} is a {found[1].kind}: "
                                f"{'call it with a key' if keyed else 'call it without a key'}")
        route = self._registry.route(entry.service, entry.handler)
        if route is None:
            return Failure(404, f"{entry.service} has no handler {entry.handler!r}")
        exclusive = route.handler.kind in ("exclusive", "workflow") and keyed
        target = f"{entry.service}/{entry.key}"
        if type(entry) is Call and exclusive and target in _path_below(live.record):
            chain = " -> ".join([*_path_below(live.record), target])
            return Failure(409, f"call cycle would deadlock key {target}: {chain}")
        return None

    # --- children in other partitions -------------------------------------------------------------

    def _hand_over(self, spec: ChildSpec) -> None:
        self._background.spawn(self._deliver(spec))

    async def _deliver(self, spec: ChildSpec) -> None:
        """Until the owner has the child durably: hand it over, then drop it from our outbox."""
        owner = self._partitions.owner(partition_of_id(spec.record.id) or 0)
        delay = 0.1
        while True:
            try:
                if self._peers is None:
                    raise ConnectionError("no other worker to hand the call to")
                await self._peers.hand_child(owner, spec)
                break
            except ConnectionError as exc:
                log.warning("handing %s to worker %d failed, retrying: %s", spec.record.id, owner, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        done = Changes()
        done.remove_outbox(spec)
        await self._store.submit(done)

    async def adopt(self, spec: ChildSpec) -> None:
        """A child another worker's handler started here: create it, once (it may come twice)."""
        record = spec.record
        if record.id in self._table.active or self._store.get_invocation(record.id) is not None:
            return
        slot = idempotency_slot(record)
        if slot is not None and (existing := self._table.existing(slot)) is not None:
            # A workflow's one run is taken: the caller's call fails, as it would have here.
            if record.reply and record.parent_id is not None and record.parent_index is not None:
                problem = Failure(409, f"workflow {record.service}/{record.key} already ran (invocation {existing})")
                self._report(record.parent_id, record.parent_index, None, problem)
            return
        changes = Changes()
        self._table.create_into(changes, record, spec.input, slot)  # its seq: ours, the owner's
        await self._creation.create(Live(record, [Input(spec.input)]), changes, slot)

    # --- results ----------------------------------------------------------------------------------

    def child_finished(self, child: InvocationRecord) -> None:
        """A child's end is durable: if its caller waits for it, complete the caller's entry."""
        if child.reply and child.parent_id is not None and child.parent_index is not None:
            self._report(child.parent_id, child.parent_index, child.output, child.failure)

    def _report(self, caller_id: str, index: int, value: bytes | None, failure: Failure | None) -> None:
        partition = partition_of_id(caller_id) or 0
        if self._partitions.owns(partition):
            self.complete_call(caller_id, index, value, failure)
        elif self._peers is not None:
            # At most once from here; the caller's recovery pulls a finished child's result.
            self._background.spawn(
                self._peers.hand_result(self._partitions.owner(partition), caller_id, index, value, failure))

    def complete_call(self, caller_id: str, index: int, value: bytes | None, failure: Failure | None) -> None:
        live = self._table.active.get(caller_id)
        if live is None or live.record.finished:
            return
        journal = self._table.journal_of(live)
        if index >= len(journal) or type(journal[index]) is not Call or journal[index].done:  # type: ignore[union-attr]
            return
        done = msgspec.structs.replace(journal[index], done=True, value=value, failure=failure)
        self._completer.complete_entry(live, index, done, value, failure)

    def recover(self, owns: Callable[[str], bool]) -> None:
        """After a restart: hand over the children and parked sends still in the outbox, in the
        order they were made (a child's ID is random within its millisecond, so the outbox's key
        order is not that); pull results that came meanwhile. (Resolutions: see resolutions.py.)"""
        for pending in sorted(self._store.outbox(), key=_made_order):
            if type(pending) is ChildSpec:
                if pending.record.parent_id is not None and owns(pending.record.parent_id):
                    self._hand_over(pending)
            elif type(pending) is ParkedSend and owns(pending.sender_id):
                self._unpark(pending)
        for live in list(self._table.active.values()):
            for index, entry in enumerate(self._store.read_journal(live.record.id)):
                if type(entry) is Call and not entry.done and entry.invocation_id:
                    child = self._store.get_invocation(entry.invocation_id)
                    if child is not None and child.finished:
                        self.complete_call(live.record.id, index, child.output, child.failure)


def _made_order(entry: OutboxEntry) -> int:
    """Children and parked sends by their seq (0 for those made before seqs, whose IDs did count
    up: their outbox order); resolutions keep the outbox's order (a stable sort)."""
    return 0 if type(entry) is ResolutionSpec else entry.seq  # type: ignore[union-attr]


def _path_below(record: InvocationRecord) -> list[str]:
    """The exclusive keys held up the chain, this invocation's own included."""
    if record.exclusive and record.key is not None:
        return [*record.call_path, f"{record.service}/{record.key}"]
    return list(record.call_path)
