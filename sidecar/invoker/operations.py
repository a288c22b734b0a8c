"""What operators do to invocations: kill, cancel, pause, resume, restart, purge."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from handler_sdk.protocol import COMPLETABLE_KINDS, Call, Cancel, Failure, Input, Output, encoder

from ..ids import partition_of_id
from ..process.partitions import PartitionMap
from ..transport.registry import Registry
from ..store import Changes, InvocationRecord, Store
from .background import Background
from .factory import RecordFactory
from .idempotency import idempotency_slot
from .live import Live
from .peers import Peers
from .promises import Promises
from .table import InvocationNotFound, InvocationTable

_KILLED = Failure(409, "invocation killed", True)
_CANCELLED = Failure(409, "invocation cancelled", True)


class InvocationStateError(Exception):
    """The operation does not apply to the invocation in its current status (HTTP 409)."""


class Steering(Protocol):
    """What operators' actions do through the lifecycle."""

    def launch(self, live: Live) -> None: ...

    def resume(self, live: Live) -> None: ...

    def terminate(self, live: Live, status: str, failure: Failure) -> None: ...

    def persist(self, record: InvocationRecord) -> asyncio.Future[None]: ...

    def paused(self, live: Live) -> None: ...

    async def create(self, live: Live, changes: Changes, slot: bytes | None) -> None: ...


class OperatorActions:
    def __init__(
        self, *, store: Store, table: InvocationTable, steering: Steering, registry: Registry,
        factory: RecordFactory, promises: Promises, partitions: PartitionMap, peers: Peers | None,
        background: Background,
    ) -> None:
        self._store = store
        self._table = table
        self._steering = steering
        self._registry = registry
        self._factory = factory
        self._promises = promises
        self._partitions = partitions
        self._peers = peers
        self._background = background

    def kill(self, invocation_id: str) -> InvocationRecord:
        """End at once: no more handler code runs for it, and its key moves on."""
        live = self._table.active.get(invocation_id)
        if live is None or live.record.finished:  # finished, or its end is being written now
            self._table.current(invocation_id)  # raises InvocationNotFound
            raise InvocationStateError(f"invocation {invocation_id} has already finished")
        self._steering.terminate(live, "killed", _KILLED)
        return live.record

    def cancel(self, invocation_id: str) -> InvocationRecord:
        """Cooperative: the handler sees ``TerminalError(409)`` at its next await and may compensate;
        calls it is waiting on are cancelled too. Never-started invocations just end cancelled."""
        live = self._unfinished(invocation_id)
        record = live.record
        record.cancelled = True
        for child_id in self._pending_children(live):
            if self._partitions.owns_invocation(child_id) and child_id in self._table.active:
                with contextlib.suppress(InvocationStateError):  # it is finishing anyway
                    self.cancel(child_id)
            elif self._peers is not None:
                self._background.spawn(self._peers.cancel(child_id))
        if live.attempt is not None:
            live.attempt.link.send(encoder.encode(Cancel(record.id)))
        elif record.status == "suspended":
            self._steering.resume(live)
        elif record.attempts == 0 or record.status == "paused":  # never ran (its deployment may be down)
            self._steering.terminate(live, "cancelled", _CANCELLED)
            return record
        elif record.status == "backing-off" and live.retry_handle is not None:
            live.retry_handle.cancel()
            self._steering.launch(live)
        self._steering.persist(record)
        return record

    def _pending_children(self, live: Live) -> list[str]:
        journal = self._table.journal_of(live)
        return [e.invocation_id for e in journal if type(e) is Call and not e.done and e.invocation_id]

    def pause(self, invocation_id: str) -> InvocationRecord:
        """Stop trying: the running attempt (if any) is dropped; ``resume`` tries again."""
        live = self._unfinished(invocation_id)
        if live.record.status in ("suspended", "pending"):
            raise InvocationStateError(f"invocation {invocation_id} is {live.record.status}: nothing to pause")
        if live.attempt is not None:
            live.attempt.detach(kill=True)
        if live.retry_handle is not None:
            live.retry_handle.cancel()
            live.retry_handle = None
        already = live.record.status == "paused"
        live.record.status = "paused"
        live.record.pause_reason = "paused by an operator"
        if already:  # a new reason, no new event
            live.journal = None
            self._steering.persist(live.record)
        else:
            self._steering.paused(live)
        return live.record

    def resume_paused(self, invocation_id: str, deployment_id: str | None = None,
                      budget: float | None = None) -> InvocationRecord:
        """Try a paused invocation again, on ``deployment_id`` if given (e.g. one with a fix), with
        its spending cap raised to ``budget`` if given (one paused for its budget)."""
        live = self._unfinished(invocation_id)
        if live.record.status != "paused":
            raise InvocationStateError(f"invocation {invocation_id} is {live.record.status}, not paused")
        if deployment_id is not None:
            if self._registry.handler_spec(deployment_id, live.record.service, live.record.handler) is None:
                raise InvocationNotFound(f"{deployment_id} (or it does not serve {live.record.target})")
            live.record.deployment_id = deployment_id
        if budget is not None:
            live.record.budget = budget
        live.record.failures = 0  # a fresh budget of retries
        live.record.pause_reason = None
        self._steering.launch(live)
        return live.record

    async def restart(self, invocation_id: str, keep: int) -> str:
        """A new invocation with the same target and input, keeping the first ``keep`` entries."""
        old = self._table.current(invocation_id)
        if not old.finished:
            raise InvocationStateError(f"invocation {invocation_id} has not finished; cancel or kill it first")
        journal = [e for e in self._store.read_journal(invocation_id) if type(e) is not Output]
        if not 1 <= keep <= len(journal):
            raise InvocationStateError(f"from must be between 1 and {len(journal)} (the journal's entries)")
        pending = [i for i, e in enumerate(journal[:keep]) if type(e) in COMPLETABLE_KINDS and not e.done]  # type: ignore[union-attr]
        if pending:
            raise InvocationStateError(
                f"entry {pending[0]} never completed (a wait that did not end): restart from {pending[0]} or before")
        route = self._registry.route(old.service, old.handler)
        if route is None:
            raise InvocationNotFound(f"{old.service}/{old.handler}")
        record = self._factory.new_record(route, old.key, headers=old.headers,
                                 partition=partition_of_id(invocation_id))
        input_value = journal[0].value if type(journal[0]) is Input else b""
        changes = Changes()
        # A workflow's restarted run becomes the key's run (attach and output by key answer with it);
        # anything else starts without the old one's idempotency key.
        self._table.create_into(changes, record, input_value,
                         idempotency_slot(record) if record.handler_kind == "workflow" else None)
        for index, entry in enumerate(journal[1:keep], start=1):
            # The journal only: the state has moved on, and a step's cost counts where it was spent.
            changes.complete_entry(record, index, entry)
        await self._steering.create(Live(record, journal[:keep]), changes, None)
        return record.id

    def _unfinished(self, invocation_id: str) -> Live:
        live = self._table.active.get(invocation_id)
        if live is None or live.record.finished:
            self._table.current(invocation_id)  # raises InvocationNotFound
            raise InvocationStateError(f"invocation {invocation_id} has already finished")
        return live

    async def purge(self, invocation_id: str) -> None:
        """Forget a finished invocation and its journal (its idempotency key becomes free)."""
        if invocation_id in self._table.active:
            raise InvocationStateError(f"invocation {invocation_id} has not finished; kill it first")
        record = self._table.current(invocation_id)
        changes = Changes()
        self.purge_into(changes, record)
        await self._store.submit(changes)

    def purge_into(self, changes: Changes, record: InvocationRecord) -> None:
        """Forget the finished ``record`` in ``changes``. A workflow run that a restart superseded
        leaves the key's run slot, state and promises to the run that holds them now."""
        slot = idempotency_slot(record)
        if slot is not None and (held := self._store.get_idempotency(slot)) is not None \
                and held.invocation_id != record.id:
            slot = None
        changes.purge(record, slot)
        if slot is not None and record.handler_kind == "workflow" and record.key is not None:
            self._promises.forget(record.service, record.key)
