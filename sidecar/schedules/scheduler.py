"""Firing schedules: in each worker, the schedules whose partition it owns (so each schedule is
fired by one process), each on one event-loop timer at its next fire time.

A firing is the send a client would make, with the idempotency key ``schedule:{name}:{fire
time}``, and the schedule's record is written after it with the next fire time. A crash between
the two leaves the fire time unhandled in the record: the restart fires it again, and its
idempotency key finds the invocation the first try made (``repeated``). Fire times that passed
while nobody was firing (the sidecar down, or the clock jumping) are made up for as the
schedule's ``catch_up`` says (``timing.plan``).

Time is read only with ``clock.now_ms`` and waited for only with ``clock.call_at_ms``.
"""

from __future__ import annotations

import logging
from typing import Protocol

import msgspec

from ..clock import Cancellable, call_at_ms, iso_ms, now_ms
from ..invoker.background import Background
from ..metrics import Metrics
from ..process.partitions import PartitionMap
from ..store import Changes, Store, StoreError
from ..store.records import CatchUpRecord, ScheduleRecord, ScheduleSpec
from .spec import IDEMPOTENCY_PREFIX, timing_of
from .timing import plan

log = logging.getLogger(__name__)

#: After a firing the sidecar could not take (overloaded, a worker restarting), the next try
#: comes this much later, doubling up to the most.
_RETRY_FIRST_MS = 1000
_RETRY_MOST_MS = 60_000

#: A stopping sidecar lets the firings being made finish (and their records be written) this long.
_CLOSE_PATIENCE_S = 5.0

#: Headers every firing's invocation carries (``ctx.headers``): which schedule, which fire time.
SCHEDULE_HEADER = "x-sidecar-schedule"
FIRE_TIME_HEADER = "x-sidecar-fire-time"


class FiringRefused(Exception):
    """The send was answered ``status`` (not 202) with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def transient(self) -> bool:
        """Overloaded, or a part of the sidecar not reachable now: the same send may work later."""
        return self.status == 429 or self.status >= 500


class Sender(Protocol):
    async def send_scheduled(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[str, bool]:
        """Send ``body`` to ``target`` (a send's path); (invocation ID, whether it existed
        already under the headers' idempotency key). Raises :class:`FiringRefused`."""


class _Armed:
    """One schedule this worker fires: its record as it stands here (ahead of the store while a
    write is in flight), its timer, its retry delay."""

    __slots__ = ("record", "timer", "retry_ms")

    def __init__(self, record: ScheduleRecord) -> None:
        self.record = record
        self.timer: Cancellable | None = None
        self.retry_ms = _RETRY_FIRST_MS

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Scheduler:
    def __init__(self, *, store: Store, partitions: PartitionMap, sender: Sender, metrics: Metrics) -> None:
        self._store = store
        self._partitions = partitions
        self._sender = sender
        self._metrics = metrics
        self._background = Background()
        #: The schedules this worker fires, by name; an entry replaced or removed stops firing.
        self._armed: dict[str, _Armed] = {}
        self._closing = False

    def owns(self, name: str) -> bool:
        return self._partitions.owns(self._partitions.of_schedule(name))

    def owner(self, name: str) -> int:
        return self._partitions.owner(self._partitions.of_schedule(name))

    def start(self) -> None:
        """Take up the stored schedules this worker owns; those with fire times past are caught up."""
        now = now_ms()
        for record in self._store.list_schedules():
            if self.owns(record.name):
                armed = self._armed[record.name] = _Armed(record)
                if record.next_fire_ms is not None and record.next_fire_ms <= now:
                    self._due(armed, on_time=False)
                else:
                    self._arm(armed, on_time=True)

    async def close(self) -> None:
        """Fire nothing more; let the firings being made be recorded (a firing cut between its
        invocation and its record would be fired again at the start, found by its idempotency
        key: harmless, but the record would lag)."""
        self._closing = True
        for armed in self._armed.values():
            armed.disarm()
        await self._background.drain(_CLOSE_PATIENCE_S)
        await self._background.close()

    # --- set and delete ------------------------------------------------------------------------

    async def put(self, name: str, spec: ScheduleSpec) -> tuple[ScheduleRecord, bool]:
        """Set schedule ``name`` (in this worker, its owner) to ``spec``, at once: its next fire
        time counts from now, unless ``spec`` is what it is already. Returns the record once
        durable, and whether it is new. A replaced schedule keeps its counts and its last
        invocation (``overlap`` sees it)."""
        now = now_ms()
        old = self._armed.get(name)
        previous = old.record if old is not None else self._store.get_schedule(name)
        if previous is not None and msgspec.structs.replace(spec, anchor_ms=previous.spec.anchor_ms) == previous.spec:
            return previous, False  # the same again (a tool that applies its config each hour): nothing moves
        record = ScheduleRecord(name=name, spec=spec, created_ms=now, updated_ms=now)
        if previous is not None:
            record = msgspec.structs.replace(previous, spec=spec, updated_ms=now, last_error=None)
        record.next_fire_ms = timing_of(spec).next_after(now)
        if old is not None:
            old.disarm()
        armed = self._armed[name] = _Armed(record)  # from here on, a firing of the old spec records nothing
        await self._write(record)
        if self._armed.get(name) is armed:
            self._arm(armed, on_time=True)
        return record, previous is None

    async def delete(self, name: str) -> bool:
        """Stop firing ``name`` and forget it (invocations it made go on); whether it existed."""
        old = self._armed.pop(name, None)
        if old is not None:
            old.disarm()
        elif self._store.get_schedule(name) is None:
            return False
        changes = Changes()
        changes.delete_schedule(name)
        await self._store.submit(changes)
        return True

    # --- firing --------------------------------------------------------------------------------

    def _arm(self, armed: _Armed, *, on_time: bool, at_ms: int | None = None) -> None:
        """Wait for the next fire time (``at_ms``: a retry) and handle what is due then."""
        due_ms = at_ms if at_ms is not None else armed.record.next_fire_ms
        if due_ms is None or self._closing:
            return
        armed.timer = call_at_ms(due_ms, self._due, armed, on_time)

    def _due(self, armed: _Armed, on_time: bool) -> None:
        armed.timer = None
        self._background.spawn(self._handle_due(armed, on_time))

    def _current(self, armed: _Armed) -> bool:
        """Whether ``armed`` is still the schedule's entry: not replaced, nor deleted."""
        return self._armed.get(armed.record.name) is armed

    async def _handle_due(self, armed: _Armed, on_time: bool) -> None:
        """Handle every fire time from the record's next one up to now, as ``catch_up`` says."""
        record = armed.record
        first = record.next_fire_ms
        if first is None or self._closing or not self._current(armed):
            return
        now = now_ms()
        timing = timing_of(record.spec)
        policy = record.spec.catch_up
        chosen = plan(timing, policy, first, now, on_time=on_time)
        if chosen.missed or (chosen.due and not on_time):
            record = armed.record = msgspec.structs.replace(
                record, missed=record.missed + chosen.missed,
                last_catch_up=CatchUpRecord(at_ms=now, due=chosen.due, fired=len(chosen.fire)))
            self._metrics.schedule_firings.labels("missed").inc(chosen.missed)
            log.info("schedule %s: %d fire times passed unhandled; catch_up=%s makes %d of them",
                     record.name, chosen.due, policy, len(chosen.fire))
        if not chosen.fire:
            record = armed.record = msgspec.structs.replace(record, next_fire_ms=timing.next_after(now))
        for fire_ms in chosen.fire:
            if self._closing:
                break  # the record says which fire time comes next: the restart goes on from there
            try:
                record = await self._fire(armed, fire_ms)
            except (FiringRefused, StoreError, ConnectionError) as exc:
                if not self._current(armed):
                    return
                self._metrics.schedule_firings.labels("deferred").inc()
                log.warning("schedule %s: the firing of %s is tried again in %d ms: %s", record.name,
                            iso_ms(fire_ms), armed.retry_ms, exc)
                retry_at = now_ms() + armed.retry_ms
                armed.retry_ms = min(armed.retry_ms * 2, _RETRY_MOST_MS)
                self._arm(armed, on_time=True, at_ms=retry_at)
                return
            if not self._current(armed):
                return
        armed.retry_ms = _RETRY_FIRST_MS
        if not chosen.fire:
            await self._write_current(armed)
        if self._current(armed):
            self._arm(armed, on_time=True)

    async def _fire(self, armed: _Armed, fire_ms: int) -> ScheduleRecord:
        """Handle fire time ``fire_ms``: skip it (overlap), make its invocation, or record its
        refusal; then write the record, with the next fire time after it. Raises what should be
        tried again (the record unchanged)."""
        record = armed.record
        spec = record.spec
        timing = timing_of(spec)
        after = {"next_fire_ms": timing.next_after(fire_ms)}
        if spec.overlap == "skip" and self._running(record.last_invocation_id):
            self._metrics.schedule_firings.labels("skipped").inc()
            changed = msgspec.structs.replace(record, skipped=record.skipped + 1, last_skipped_ms=fire_ms, **after)
        else:
            headers = {"idempotency-key": f"{IDEMPOTENCY_PREFIX}{record.name}:{fire_ms}",
                       SCHEDULE_HEADER: record.name, FIRE_TIME_HEADER: iso_ms(fire_ms)}
            target = spec.target
            if spec.key_per_firing:
                service, key, handler = target.split("/")
                target = f"{service}/{key}-{iso_ms(fire_ms)}/{handler}"
            try:
                invocation_id, repeated = await self._sender.send_scheduled(target, spec.input, headers)
            except FiringRefused as refusal:
                if refusal.transient:
                    raise
                self._metrics.schedule_firings.labels("failed").inc()
                log.warning("schedule %s: the firing of %s was refused: %s (HTTP %d)", record.name,
                            iso_ms(fire_ms), refusal.message, refusal.status)
                changed = msgspec.structs.replace(record, failed=record.failed + 1,
                                                  last_error=f"{refusal.message} (HTTP {refusal.status})", **after)
            else:
                self._metrics.schedule_firings.labels("repeated" if repeated else "fired").inc()
                changed = msgspec.structs.replace(record, fired=record.fired + 1, last_fire_ms=fire_ms,
                                                  last_invocation_id=invocation_id, **after)
        if not self._current(armed):
            return changed
        armed.record = changed
        await self._write(changed)
        return changed

    def _running(self, invocation_id: str | None) -> bool:
        """Whether that invocation is unfinished, as the store has it (its end is written by its
        owner, perhaps another worker; it may lag the end by a commit: then this firing is skipped)."""
        if invocation_id is None:
            return False
        stored = self._store.get_invocation(invocation_id)
        return stored is not None and not stored.finished

    async def _write_current(self, armed: _Armed) -> None:
        if self._current(armed):
            await self._write(armed.record)

    async def _write(self, record: ScheduleRecord) -> None:
        changes = Changes()
        changes.put_schedule(record)
        await self._store.submit(changes)
