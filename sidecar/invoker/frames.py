"""Frames from a handler's attempt: journal appends, suspensions, ends.

Each entry is checked, journaled and handed to the part it concerns (calls, promises, waits,
awakeable resolutions); what ends or suspends the attempt goes back to the lifecycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
import math
from functools import partial
from typing import Protocol

from handler_sdk.protocol import (
    ACKED_KINDS, COMPLETABLE_KINDS, AskLeave, Call, ClearAllState, ClearState, Command, CompleteAwakeable,
    CompletePromise, End, Entry, Event, Failure, FetchBlobs, GetPromise, Input, Output, Pause, PeekPromise, Publish,
    Run, Send, SetState, Sleep, StepReport, Suspend, ToSidecar, encoder,
)

from handler_sdk.payload_limits import checked_step, too_large

from ..clock import now_ms
from ..durations import delay_problem, wake_problem
from ..metrics import Metrics
from ..store import Changes, InvocationRecord, Store
from ..store.records import ResolutionSpec
from .blob_wire import note_held
from .growth import payload_bytes
from .calls import Calls
from .commits import recheck_if_cancelled
from .events import EventStreams, Place
from .gates import Gates, spec_problem
from .growth import GrowthWatch
from .identifiers import entry_identifier_problem
from .live import Attempt, Live
from .promises import Promises
from .resolutions import Resolutions
from .state_in_flight import StateInFlight
from .waits import DurableWaits, is_done

log = logging.getLogger(__name__)

_STATE_WRITES = (SetState, ClearState, ClearAllState)
_PROMISE_KINDS = (GetPromise, PeekPromise, CompletePromise)


def _absurd(entry: Entry) -> str | None:
    """What is wrong with a new entry that decodes but makes no sense, if anything."""
    kind = type(entry)
    if kind in COMPLETABLE_KINDS and entry.done:  # type: ignore[union-attr]
        return f"a new {kind.__name__} entry cannot be done already: the sidecar completes it"
    if kind is Sleep:  # an instant past 64 bits would fail the whole batch
        problem = wake_problem(entry.wake_at_ms, now_ms())  # type: ignore[union-attr]
        return problem and f"Sleep wake_at_ms: {problem}"
    if kind is Send:
        problem = delay_problem(entry.delay_ms)  # type: ignore[union-attr]
        return problem and f"Send delay_ms: {problem}"
    if kind is Run:  # summed per invocation, target and step: one NaN would spoil every sum it is in
        cost = entry.cost  # type: ignore[union-attr]
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            return f"Run cost must be a finite number, zero or more, not {cost}"
    return None


#: A handler's pause reason is kept to this many characters: the record is rewritten at every change.
MAX_REASON = 1024


def short_reason(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 6] + " (cut)"


class AttemptOutcomes(Protocol):
    """What the lifecycle does when a frame ends, suspends or fails an attempt."""

    def retry_later(self, live: Live, reason: str) -> None: ...

    def finish(self, live: Live, status: str, output: bytes | None, failure: Failure | None) -> None: ...

    def resume(self, live: Live) -> None: ...

    def attempt_failed(self, attempt: Attempt, reason: str) -> None: ...

    def write_failed(self, live: Live, attempt: Attempt | None, error: str) -> None: ...

    def persist(self, record: InvocationRecord) -> asyncio.Future[None]: ...

    def paused(self, live: Live) -> None: ...


class FrameHandler:
    """What the invoker does with each frame an attempt sends."""

    def __init__(
        self, *, store: Store, outcomes: AttemptOutcomes, calls: Calls, promises: Promises, waits: DurableWaits,
        resolutions: Resolutions, events: EventStreams, state_in_flight: StateInFlight, metrics: Metrics,
        gates: Gates,
        max_payload_bytes: int, growth: GrowthWatch,
    ) -> None:
        self._store = store
        self._max_payload_bytes = max_payload_bytes
        self._growth = growth
        self._metrics = metrics
        self._outcomes = outcomes
        self._calls = calls
        self._promises = promises
        self._waits = waits
        self._resolutions = resolutions
        self._events = events
        self._state_in_flight = state_in_flight
        self._gates = gates

    def on_message(self, attempt: Attempt, message: ToSidecar) -> None:
        kind = type(message)
        if kind is Command:
            self._append(attempt, message)  # type: ignore[arg-type]
        elif kind is End:
            self._ended(attempt, message)  # type: ignore[arg-type]
        elif kind is Suspend:
            self._suspend(attempt, message)  # type: ignore[arg-type]
        elif kind is Pause:
            self._pause(attempt, message)  # type: ignore[arg-type]
        elif kind is Event:
            event: Event = message  # type: ignore[assignment]
            self._events.ephemeral(attempt.live.record.id, Place(event.after, event.seq), event.event)
        elif kind is FetchBlobs:  # the handler lacks blobs its Start referred to
            for answer in attempt.blobs.answer(message.invocation_id, message.sha256):  # type: ignore[union-attr]
                attempt.link.send(encoder.encode(answer))
        elif kind is StepReport or kind is AskLeave:
            self._gate(attempt, message)  # type: ignore[arg-type]

    def _gate(self, attempt: Attempt, message: AskLeave | StepReport) -> None:
        spec = message.breaker
        if spec is not None and (problem := spec_problem(spec)) is not None:
            return self._violation(attempt, problem)
        if isinstance(message, StepReport):
            self._gates.reported(message)
        else:
            self._gates.asked(attempt, message)

    def _append(self, attempt: Attempt, command: Command) -> None:
        live = attempt.live
        journal = live.journal
        assert journal is not None
        entry = command.entry
        kind = type(entry)
        if command.index != len(journal):
            return self._violation(attempt, f"entry index {command.index} sent, {len(journal)} expected")
        if kind is Input or kind is Output:
            return self._violation(attempt, f"handlers may not write {kind.__name__} entries")
        if kind in _STATE_WRITES and not live.record.exclusive:
            return self._violation(attempt, f"a {live.record.handler_kind} handler may not write state")
        if (problem := entry_identifier_problem(entry) or _absurd(entry)) is not None:
            return self._violation(attempt, problem)
        size = payload_bytes(entry)
        if size > self._max_payload_bytes:  # a value over the limit (most entries are far within it)
            if type(entry) is SetState and len(entry.value) > self._max_payload_bytes:
                return self._violation(attempt, too_large(f"state value {entry.name!r}", len(entry.value),
                                                          self._max_payload_bytes))
            refused = checked_step(entry, self._max_payload_bytes) if kind is Run else entry  # type: ignore[arg-type]
            if refused is not entry:  # an SDK that did not check: journal the step's failure, replay it
                return self._refuse_step(attempt, command.index, refused)
        held = attempt.link.held
        if held is not None and attempt.blobs.threshold and size > attempt.blobs.threshold:
            note_held(entry, attempt.blobs.threshold, held, self._store.blob_memo.ref)  # the SDK keeps them
        changes = Changes()
        after: Callable[[], object] | None = None
        if kind is Call or kind is Send:
            entry, after = self._calls.journaled(live, command.index, entry, changes)  # type: ignore[arg-type]
        elif kind in _PROMISE_KINDS:
            after = self._promises.journaled(live, command.index, entry, changes)  # type: ignore[arg-type]
        elif kind is CompleteAwakeable:  # journaled with its delivery, so that it is delivered once
            resolution = ResolutionSpec(sender_id=live.record.id, awakeable_id=entry.id,  # type: ignore[union-attr]
                                        value=entry.value, failure=entry.failure)  # type: ignore[union-attr]
            changes.put_outbox(resolution)
            after = partial(self._resolutions.deliver, resolution)
        journal.append(entry)
        self._growth.appended(live, command.index, entry, size)
        changes.append_entry(live.record, command.index, entry)
        if kind in COMPLETABLE_KINDS:
            self._waits.journaled(live, command.index, entry, changes)
        if kind is Run:
            self._gates.journaled(attempt, command.index)
        if kind in ACKED_KINDS:  # the handler is blocked until this is durable: told synchronously
            written = self._store.submit(changes, partial(self._durable, attempt, command.index, entry))
        else:
            written = self._store.submit(changes)
            written.add_done_callback(partial(self._written, attempt))
        if after is not None:
            after()
        if kind is Publish:  # subscribers see a milestone once it is durable
            written.add_done_callback(lambda _: self._events.changed(live.record.id))
        if kind in _STATE_WRITES:
            lock_key = live.lock_key  # an exclusive handler's: others may not write state
            assert lock_key is not None
            self._state_in_flight.add(lock_key, entry)  # type: ignore[arg-type]
            written.add_done_callback(partial(self._state_written, lock_key))

    def _refuse_step(self, attempt: Attempt, index: int, refused: Entry) -> None:
        """A step value over ``max_payload_bytes``: its entry is journaled as the 413 failure and the
        attempt retried (it was waiting for an ack of the value), so the replay fails the step."""
        live = attempt.live
        assert live.journal is not None
        live.journal.append(refused)
        changes = Changes()
        changes.append_entry(live.record, index, refused)
        self._store.submit(changes).add_done_callback(partial(self._written, attempt))
        self._violation(attempt, f"step value over max_payload_bytes ({self._max_payload_bytes})")

    def _suspend(self, attempt: Attempt, suspend: Suspend) -> None:
        live = attempt.live
        journal = live.journal
        assert journal is not None
        if suspend.waiting_on and all(0 <= i < len(journal) and type(journal[i]) in ACKED_KINDS
                                      for i in suspend.waiting_on):
            # Request-response mode: the handler stopped where a step needs its ack. Once the
            # step is durable (an empty batch commits after it), it runs again with it journaled.
            attempt.detach()
            live.record.failures = 0
            self._store.submit(Changes()).add_done_callback(partial(self._resume_after_ack, live))
            return
        if not suspend.waiting_on or any(  # a negative index would count from the end
                not 0 <= i < len(journal) or type(journal[i]) not in COMPLETABLE_KINDS for i in suspend.waiting_on):
            return self._violation(attempt, f"suspended waiting on {suspend.waiting_on}, not completable entries")
        attempt.detach()
        record = live.record
        record.waiting_on = list(suspend.waiting_on)
        record.failures = 0  # it got somewhere: the retry budget starts over
        if any(is_done(journal[i]) for i in record.waiting_on):  # completed while the Suspend was in flight
            return self._outcomes.resume(live)
        record.status = "suspended"
        record.modified_ms = now_ms()
        self._metrics.suspensions.inc()
        self._outcomes.persist(record)

    def _pause(self, attempt: Attempt, pause: Pause) -> None:
        """The handler stops itself until an operator resumes it (its budget is spent)."""
        attempt.detach()
        live, record = attempt.live, attempt.live.record
        record.status = "paused"
        record.next_retry_ms = None
        record.pause_reason = short_reason(pause.reason)
        record.modified_ms = now_ms()
        log.warning("%s paused by its handler: %s", record.id, pause.reason, extra={"invocation_id": record.id})
        self._outcomes.paused(live)

    def _resume_after_ack(self, live: Live, written: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, written, partial(self._resume_after_ack, live)):
            return
        record = live.record
        if live.attempt is not None or record.status != "running":
            return  # killed, paused or failed meanwhile
        error = written.exception()
        if error is None:
            self._outcomes.resume(live)
        else:  # the step's entry may not be durable: a later attempt runs it again
            self._outcomes.write_failed(live, None, str(error))

    def _state_written(self, key: tuple[str, str], future: asyncio.Future[None]) -> None:
        self._state_in_flight.settled(key)

    def _written(self, attempt: Attempt, future: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, future, partial(self._written, attempt)):
            return
        error = future.exception()
        if error is not None:
            self._outcomes.write_failed(attempt.live, attempt, str(error))

    def _durable(self, attempt: Attempt, index: int, entry: Entry, error: str | None) -> None:
        if error is not None:
            return self._outcomes.write_failed(attempt.live, attempt, error)
        attempt.ack(index)
        if type(entry) is Run:  # counted once: durable now, never journaled again
            record = attempt.live.record
            if entry.duration_ms is not None:
                self._metrics.step_seconds.labels(record.service).observe(entry.duration_ms / 1000)
            if entry.cost is not None:
                self._metrics.cost.labels(record.service, record.handler, entry.name).inc(entry.cost)

    def _violation(self, attempt: Attempt, what: str) -> None:
        attempt.detach(kill=True)
        self._outcomes.retry_later(attempt.live, f"protocol violation: {what}")

    def _ended(self, attempt: Attempt, end: End) -> None:
        attempt.detach()
        failure = end.failure
        if failure is not None and not failure.terminal:
            self._outcomes.retry_later(attempt.live, failure.message)
        elif failure is None:
            self._outcomes.finish(attempt.live, "completed", end.output, None)
        else:
            self._outcomes.finish(attempt.live, "cancelled" if attempt.live.record.cancelled else "failed", None, failure)
