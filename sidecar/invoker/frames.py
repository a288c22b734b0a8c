"""Frames from a handler's attempt: journal appends, suspensions, ends; and awakeable resolutions
the handler asks for. A mixin of the invoker, kept apart so that each module has one job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from handler_sdk.protocol import (
    ACKED_KINDS, COMPLETABLE_KINDS, Call, ClearAllState, ClearState, Command, CompleteAwakeable, CompletePromise,
    End, Entry, Event, Failure, GetPromise, Input, Output, PeekPromise, Publish, Send, SetState, Sleep, Suspend,
    ToSidecar,
)

from ..clock import now_ms
from ..durations import delay_problem, wake_problem
from ..store import Changes
from ..store.records import ResolutionSpec
from .awakeable_ids import parse_awakeable_id
from .commits import recheck_if_cancelled
from .events import Place
from .identifiers import entry_identifier_problem
from .live import Attempt, Live
from .waits import AwakeableCompleted, AwakeableNotFound, is_done

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
    return None


class FrameHandling:
    """What the invoker does with each frame an attempt sends (uses the invoker's state)."""

    def on_message(self, attempt: Attempt, message: ToSidecar) -> None:
        kind = type(message)
        if kind is Command:
            self._append(attempt, message)  # type: ignore[arg-type]
        elif kind is End:
            self._ended(attempt, message)  # type: ignore[arg-type]
        elif kind is Suspend:
            self._suspend(attempt, message)  # type: ignore[arg-type]
        elif kind is Event:
            event: Event = message  # type: ignore[assignment]
            self.events.ephemeral(attempt.live.record.id, Place(event.after, event.seq), event.event)

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
        changes = Changes()
        after: Callable[[], None] | None = None
        if kind is Call or kind is Send:
            entry, after = self.calls.journaled(live, command.index, entry, changes)  # type: ignore[arg-type]
        elif kind in _PROMISE_KINDS:
            after = self._promises.journaled(live, command.index, entry, changes)  # type: ignore[arg-type]
        elif kind is CompleteAwakeable:  # journaled with its delivery, so that it is delivered once
            resolution = ResolutionSpec(sender_id=live.record.id, awakeable_id=entry.id,  # type: ignore[union-attr]
                                        value=entry.value, failure=entry.failure)  # type: ignore[union-attr]
            changes.put_outbox(resolution)
            after = partial(self.deliver_resolution, resolution)
        journal.append(entry)
        changes.append_entry(live.record, command.index, entry)
        if kind in COMPLETABLE_KINDS:
            self._waits.journaled(live, command.index, entry, changes)
        if kind in ACKED_KINDS:  # the handler is blocked until this is durable: no detour
            written = self._store.submit(changes, partial(self._durable, attempt, command.index))
        else:
            written = self._store.submit(changes)
            written.add_done_callback(partial(self._written, attempt))
        if after is not None:
            after()
        if kind is Publish:  # subscribers see a milestone once it is durable
            written.add_done_callback(lambda _: self.events.changed(live.record.id))
        if kind in _STATE_WRITES:
            lock_key = live.lock_key  # an exclusive handler's: others may not write state
            assert lock_key is not None
            self._state_in_flight.add(lock_key, entry)  # type: ignore[arg-type]
            written.add_done_callback(partial(self._state_written, lock_key))

    def deliver_resolution(self, resolution: ResolutionSpec) -> None:
        self.spawn(self._deliver_resolution(resolution))

    async def _deliver_resolution(self, resolution: ResolutionSpec) -> None:
        """A handler resolved an awakeable: complete it (here, or at the worker that owns it),
        retrying until that worker answers, then drop it from the outbox. A resolution that
        finds no such awakeable, or one already completed, has been delivered as well as it can."""
        awakeable_id, delay = resolution.awakeable_id, 0.1
        while True:
            try:
                invocation_id, _ = parse_awakeable_id(awakeable_id)
                if self._partitions.owns_invocation(invocation_id) or self.forward_resolution is None:
                    await self.resolve_awakeable(awakeable_id, resolution.value, resolution.failure)
                else:
                    await self.forward_resolution(awakeable_id, resolution.value, resolution.failure)
                break
            except (ValueError, AwakeableNotFound, AwakeableCompleted) as exc:
                log.info("awakeable %s not completed by a handler: %s", awakeable_id, type(exc).__name__)
                break
            except ConnectionError as exc:
                log.warning("awakeable %s: its owner is unreachable, retrying: %s", awakeable_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        delivered = Changes()
        delivered.remove_outbox(resolution)
        await self._store.submit(delivered)

    def resolve_awakeable(self, awakeable_id: str, value: bytes | None, failure: Failure | None) -> asyncio.Future[None]:
        """Resolve or reject an awakeable this worker owns; the future resolves once durable.

        Shielded: a caller that stops waiting (its client hung up) must not cancel the commit
        whose callback hands the result to the attempt."""
        return asyncio.shield(self._waits.resolve(awakeable_id, value, failure))

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
            return self.resume(live)
        record.status = "suspended"
        record.modified_ms = now_ms()
        self._persist(record)

    def _resume_after_ack(self, live: Live, written: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, written, partial(self._resume_after_ack, live)):
            return
        record = live.record
        if live.attempt is not None or record.status != "running" or record.id not in self.active:
            return  # killed, paused or failed meanwhile
        error = written.exception()
        if error is None:
            self.resume(live)
        else:  # the step's entry may not be durable: a later attempt runs it again
            self._retry_later(live, f"journal write failed: {error}")

    def complete_entry(
        self, live: Live, index: int, done: Entry, value: bytes | None, failure: Failure | None,
    ) -> asyncio.Future[None]:
        """Entry ``index`` of ``live`` is done: journal that, then tell the handler (or resume it)."""
        return self._waits.complete(live, index, done, value, failure, Changes())

    def resume(self, live: Live) -> None:
        """A suspended invocation's wait is over: a new attempt replays the longer journal."""
        live.record.waiting_on = []
        live.journal = None
        self._launch(live)

    def _state_written(self, key: tuple[str, str], future: asyncio.Future[None]) -> None:
        self._state_in_flight.settled(key)

    def _written(self, attempt: Attempt, future: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, future, partial(self._written, attempt)):
            return
        error = future.exception()
        if error is not None:
            self.attempt_failed(attempt, f"journal write failed: {error}")

    def _durable(self, attempt: Attempt, index: int, error: str | None) -> None:
        if error is not None:
            self.attempt_failed(attempt, f"journal write failed: {error}")
        else:
            attempt.ack(index)

    def _violation(self, attempt: Attempt, what: str) -> None:
        attempt.detach(kill=True)
        self._retry_later(attempt.live, f"protocol violation: {what}")

    def _ended(self, attempt: Attempt, end: End) -> None:
        attempt.detach()
        failure = end.failure
        if failure is not None and not failure.terminal:
            self._retry_later(attempt.live, failure.message)
        elif failure is None:
            self._finish(attempt.live, "completed", end.output, None)
        else:
            self._finish(attempt.live, "cancelled" if attempt.live.record.cancelled else "failed", None, failure)

    def attempt_failed(self, attempt: Attempt, reason: str) -> None:
        if attempt.over:
            return
        attempt.detach(kill=True)
        self._retry_later(attempt.live, reason)

