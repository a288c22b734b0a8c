"""What operators do to invocations: kill, cancel, pause, resume, restart, purge, deadlines.

A mixin of the invoker: these act on the same in-memory invocations and store, and are kept
apart only so that each module stays about one job.
"""

from __future__ import annotations

import asyncio
import contextlib

from handler_sdk.protocol import COMPLETABLE_KINDS, Call, Cancel, Failure, Input, Output, encoder

from ..ids import partition_of_id
from ..clock import now_ms
from ..store import Changes, InvocationRecord
from .idempotency import idempotency_slot
from .live import Live

_KILLED = Failure(409, "invocation killed", True)
_CANCELLED = Failure(409, "invocation cancelled", True)


class InvocationNotFound(LookupError):
    pass


class InvocationStateError(Exception):
    """The operation does not apply to the invocation in its current status (HTTP 409)."""



class OperatorActions:
    """Operator actions of :class:`~sidecar.invoker.engine.Invoker` (uses its state)."""

    def kill(self, invocation_id: str) -> InvocationRecord:
        """End at once: no more handler code runs for it, and its key moves on."""
        live = self.active.get(invocation_id)
        if live is None or live.record.finished:  # finished, or its end is being written now
            self.current(invocation_id)  # raises InvocationNotFound
            raise InvocationStateError(f"invocation {invocation_id} has already finished")
        self._terminate(live, "killed", _KILLED)
        return live.record

    def cancel(self, invocation_id: str) -> InvocationRecord:
        """Cooperative: the handler sees ``TerminalError(409)`` at its next await and may compensate;
        calls it is waiting on are cancelled too. Never-started invocations just end cancelled."""
        live = self._unfinished(invocation_id)
        record = live.record
        record.cancelled = True
        for child_id in self._pending_children(live):
            if self._partitions.owns_invocation(child_id) and child_id in self.active:
                with contextlib.suppress(InvocationStateError):  # it is finishing anyway
                    self.cancel(child_id)
            elif self.forward_cancel is not None:
                self.spawn(self.forward_cancel(child_id))
        if live.attempt is not None:
            live.attempt.link.send(encoder.encode(Cancel(record.id)))
        elif record.status == "suspended":
            self.resume(live)
        elif record.attempts == 0 or record.status == "paused":  # never ran (its deployment may be down)
            self._terminate(live, "cancelled", _CANCELLED)
            return record
        elif record.status == "backing-off" and live.retry_handle is not None:
            live.retry_handle.cancel()
            self._launch(live)
        self._persist(record)
        return record

    def _pending_children(self, live: Live) -> list[str]:
        journal = live.journal if live.journal is not None else self._store.read_journal(live.record.id)
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
        live.record.status = "paused"
        live.record.last_error = live.record.last_error or "paused by an operator"
        live.journal = None
        self._persist(live.record)
        return live.record

    def resume_paused(self, invocation_id: str, deployment_id: str | None = None) -> InvocationRecord:
        """Try a paused invocation again, on ``deployment_id`` if given (e.g. one with a fix)."""
        live = self._unfinished(invocation_id)
        if live.record.status != "paused":
            raise InvocationStateError(f"invocation {invocation_id} is {live.record.status}, not paused")
        if deployment_id is not None:
            if self._registry.handler_spec(deployment_id, live.record.service, live.record.handler) is None:
                raise InvocationNotFound(f"{deployment_id} (or it does not serve {live.record.target})")
            live.record.deployment_id = deployment_id
        live.record.failures = 0  # a fresh budget of retries
        self._launch(live)
        return live.record

    async def restart(self, invocation_id: str, keep: int) -> str:
        """A new invocation with the same target and input, keeping the first ``keep`` entries."""
        old = self.current(invocation_id)
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
        record = self.new_record(route, old.key, headers=old.headers,
                                 partition=partition_of_id(invocation_id))
        input_value = journal[0].value if type(journal[0]) is Input else b""  # type: ignore[union-attr]
        changes = Changes()
        # A workflow's restarted run becomes the key's run (attach and output by key answer with it);
        # anything else starts without the old one's idempotency key.
        self.create_into(changes, record, input_value,
                         idempotency_slot(record) if record.handler_kind == "workflow" else None)
        for index, entry in enumerate(journal[1:keep], start=1):
            changes.complete_entry(record, index, entry)  # the journal only: the state has moved on
        await self.create(Live(record, journal[:keep]), changes, None)
        return record.id

    def _unfinished(self, invocation_id: str) -> Live:
        live = self.active.get(invocation_id)
        if live is None or live.record.finished:
            self.current(invocation_id)  # raises InvocationNotFound
            raise InvocationStateError(f"invocation {invocation_id} has already finished")
        return live

    def _terminate(self, live: Live, status: str, failure: Failure) -> None:
        """End ``live`` now, wherever it is: no more handler code runs for it."""
        if live.attempt is not None:
            live.attempt.detach(kill=True)
        if live.retry_handle is not None:
            live.retry_handle.cancel()
            live.retry_handle = None
        lock_key = live.lock_key
        if lock_key is not None and not live.holds_key:
            self._keys.withdraw(lock_key, live)
        self._finish(live, status, None, failure)

    def _arm_deadline(self, live: Live) -> None:
        assert live.record.deadline_ms is not None
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + max(0.0, (live.record.deadline_ms - now_ms()) / 1000), self._deadline_passed, live)

    def _deadline_passed(self, live: Live) -> None:
        record = live.record
        if record.finished or self.active.get(record.id) is not live:
            return
        total_s = ((record.deadline_ms or 0) - record.created_ms) / 1000
        self._terminate(live, "failed", Failure(408, f"invocation timed out after {total_s:g} s (waits included)"))

    async def purge(self, invocation_id: str) -> None:
        """Forget a finished invocation and its journal (its idempotency key becomes free)."""
        if invocation_id in self.active:
            raise InvocationStateError(f"invocation {invocation_id} has not finished; kill it first")
        record = self.current(invocation_id)
        changes = Changes()
        self.purge_into(changes, record)
        await self._store.submit(changes)


