"""The invoker: turns accepted requests into journaled, retried, exactly-once invocations.

Ordering guarantees rest on one fact: the store commits batches in the order they were submitted.
An invocation's entries are submitted in the order its handler sent them, and its final record
after all of them, so whatever a later attempt reads from the store is a prefix-complete journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

import aiohttp
import msgspec

from handler_sdk.protocol import (
    ClearAllState, ClearState, CompletePromise,
    Failure, GetPromise, Input, Output, PeekPromise, Publish, RetrySpec, SetState, Start, encoder, Cancel,
)

from ..config import Settings
from ..ids import IdGenerator
from ..invoke_link import InvokePool
from ..links import DeploymentPool, Link, LinkError
from ..metrics import Metrics
from ..partitions import PartitionMap
from ..registry import Registry, Route
from ..retry import RetryPolicy
from ..clock import InboxClock, iso_ms, now_ms
from ..store import Changes, InvocationRecord, Store, StoreError
from ..store import keys as store_keys
from .admission import Overloaded, admit
from .calls import Calls
from .commits import recheck_if_cancelled
from .events import EventPage, EventStreams, Place, StreamEnd, StreamEvent
from .idempotency import idempotency_slot
from .keylocks import KeyLocks
from .live import Attempt, Live
from .frames import FrameHandling
from .operations import InvocationNotFound, OperatorActions
from .promises import Promises
from .reachability import Prober
from .state_edits import StateEdit, StateEdits
from .state_in_flight import StateInFlight
from .waits import Waits, is_done

log = logging.getLogger(__name__)

_STATE_WRITES = (SetState, ClearState, ClearAllState)
_PROMISE_KINDS = (GetPromise, PeekPromise, CompletePromise)
#: While the store has no room, an attempt due to start looks again this much later.
_FULL_STORE_WAIT_S = 1.0
#: Recovery logs a line for each of this many invocations, then only their count.
_RECOVERIES_SHOWN = 100


def _seed(invocation_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(invocation_id.encode(), digest_size=8).digest(), "big")


class Invoker(FrameHandling, OperatorActions):
    def __init__(
        self, *, store: Store, registry: Registry, settings: Settings, http: aiohttp.ClientSession, ids: IdGenerator,
        partitions: PartitionMap, metrics: Metrics,
    ) -> None:
        self._partitions = partitions
        self._metrics = metrics
        self._commits_seen = (0, 0)
        self._anywhere = 0  # spreads keyless invocations over the partitions this worker owns
        self._store = store
        self._registry = registry
        self._settings = settings
        self._http = http
        self._ids = ids
        self.inbox_clock = InboxClock()
        self.active: dict[str, Live] = {}
        self._keys: KeyLocks[Live | StateEdit] = KeyLocks()
        self._pools: dict[str, DeploymentPool | InvokePool] = {}
        self._probers: dict[str, Prober] = {}
        #: Idempotency keys whose invocation is accepted but not yet committed: a concurrent
        #: repeat must attach to it, and the store cannot tell it yet.
        self._idempotency_inflight: dict[bytes, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._state_in_flight = StateInFlight()
        self.state_edits = StateEdits(store, self._keys, self._state_in_flight, self.active,
                                      metrics.state_edits_waiting)
        self._waits = Waits(self, store)
        self.calls = Calls(self, store, registry, partitions)
        self._promises = Promises(self, store)
        self.events = EventStreams()
        #: Set where workers share the partitions: cancels a callee another worker owns.
        self.forward_cancel: Callable[[str], Awaitable[None]] | None = None
        #: Set where workers share the partitions: completes an awakeable another worker owns.
        self.forward_resolution: Callable[[str, bytes | None, Failure | None], Awaitable[None]] | None = None
        #: Set during shutdown: attempts cut by our own exit are not the handler's failures.
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover unfinished invocations, then watch for silent handlers and expired results."""
        self._recover()
        self.spawn(self._watch_inactivity())
        self.spawn(self._sweep_retention())

    async def close(self, reason: StoreError | None = None) -> None:
        """Stop every attempt, let waiting callers go (told ``reason``: the store was lost); once."""
        if self._closing:
            return
        self._closing = True
        self.events.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for live in self.active.values():
            if live.retry_handle is not None:
                live.retry_handle.cancel()
            for waiter in live.waiters:
                if reason is None:
                    waiter.cancel()
                elif not waiter.done():
                    waiter.set_exception(reason)
        await asyncio.gather(*(pool.close() for pool in self._pools.values()), return_exceptions=True)

    def spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _recover(self) -> None:
        """Re-admit every unfinished invocation, per key in arrival order, as the store has it."""
        now = now_ms()
        records = [self._store.get_invocation(i) for i in self._store.scan_inbox()
                   if self._partitions.owns_invocation(i)]
        for record in records:
            if record is not None:
                self.inbox_clock.observe(record.inbox_seq)
        # An invocation that already started holds its key, even if one that arrived earlier
        # (a delayed send now due) is also waiting: admit the holders first.
        started = [r for r in records if r is not None and not r.finished and r.attempts > 0]
        waiting = [r for r in records if r is not None and not r.finished and r.attempts == 0]
        for shown, record in enumerate(started + waiting):
            invocation_id = record.id
            if shown < _RECOVERIES_SHOWN:
                log.info("%s recovered: %s after %d attempts", invocation_id, record.status, record.attempts,
                         extra={"invocation_id": invocation_id})
            live = Live(record)
            self.active[invocation_id] = live
            if record.deadline_ms is not None:
                self._arm_deadline(live)
            if record.attempts == 0 and record.start_at_ms is not None and record.start_at_ms > now:
                self._schedule_at(live, record.start_at_ms)
                continue
            lock_key = live.lock_key
            if lock_key is not None:
                if not self._keys.admit(lock_key, live):
                    record.status = "pending"
                    continue
                live.holds_key = True
            if record.status == "paused":
                continue
            if record.status == "suspended":
                journal = self._store.read_journal(record.id)
                if not any(i < len(journal) and is_done(journal[i]) for i in record.waiting_on):
                    continue  # still waiting: its timers are reloaded below
            if record.status == "backing-off" and record.next_retry_ms is not None:
                live.retry_handle = asyncio.get_running_loop().call_later(
                    max(0.0, (record.next_retry_ms - now) / 1000), self._launch, live)
            else:
                self._launch(live)
        self._waits.recover(self._partitions.owns_invocation)
        self.calls.recover(self._partitions.owns_invocation)
        if self.active:
            log.info("recovered %d unfinished invocations%s", len(self.active),
                     f" ({len(self.active) - _RECOVERIES_SHOWN} not shown one by one)"
                     if len(self.active) > _RECOVERIES_SHOWN else "")

    # --- accepting ------------------------------------------------------------------------------

    async def submit(
        self, route: Route, key: str | None, body: bytes, headers: dict[str, str], idempotency_key: str | None,
        *, delay_s: float = 0.0, partition: int | None = None,
    ) -> tuple[str, bool]:
        """Journal a new invocation durably and schedule it (``delay_s`` later).

        Returns (ID, whether it already existed under this idempotency key).
        """
        record = self.new_record(route, key, headers=headers, idempotency_key=idempotency_key,
                                 partition=partition, delay_s=delay_s)
        raw_idem = idempotency_slot(record)
        if raw_idem is not None and (existing := self.existing(raw_idem)) is not None:
            return existing, True
        live = Live(record, [Input(body)])
        lock_key = live.lock_key
        try:
            admit(record, self._settings, unfinished=len(self.active),
                  waiting_on_key=self._keys.waiting(lock_key) if lock_key and not delay_s else 0)
        except Overloaded as refusal:
            self._metrics.refused.labels("worker" if refusal.whole_worker else "key").inc()
            raise
        changes = Changes()
        self.create_into(changes, record, body, raw_idem)
        self.active[record.id] = live  # from now on, a kill or a cancel finds it
        await self.create(live, changes, raw_idem)
        return record.id, False

    async def create(self, live: Live, changes: Changes, slot: bytes | None) -> None:
        """Commit ``changes``, which create ``live`` (holding idempotency ``slot``); returns once
        durable. It is accepted then, even if whoever awaits this has given up meanwhile: what
        they await is a future of our own, not the store's."""
        if slot is not None:
            self._idempotency_inflight[slot] = live.record.id
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._store.submit(changes).add_done_callback(partial(self._created, live, slot, durable))
        await durable

    def _created(self, live: Live, slot: bytes | None, durable: asyncio.Future[None],
                 written: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, written, partial(self._created, live, slot, durable)):
            return
        if slot is not None:
            self._idempotency_inflight.pop(slot, None)
        error = written.exception()
        if error is not None:
            self.active.pop(live.record.id, None)
        elif not live.record.finished:  # killed or cancelled before it was durable: never launched
            self.accept(live)
        if durable.done():  # its awaiter left
            return
        if error is not None:
            durable.set_exception(error)
        else:
            durable.set_result(None)

    def new_record(
        self, route: Route, key: str | None, *, headers: dict[str, str], idempotency_key: str | None = None,
        partition: int | None = None, delay_s: float = 0.0, invocation_id: str | None = None,
    ) -> InvocationRecord:
        """A new invocation's record, in ``partition`` (anywhere this worker owns if None), with
        ``invocation_id`` if one was assigned to it already (a parked send's)."""
        now = now_ms()
        if partition is None:
            self._anywhere += 1
            partition = self._partitions.local_partition(self._anywhere)
        spec = route.handler
        total_ms = spec.timeouts.total_ms or int(self._settings.invocation_timeout_s * 1000)
        return InvocationRecord(
            id=invocation_id or self._ids.invocation_id(partition), service=route.service.name, handler=spec.name, key=key,
            handler_kind=spec.kind if route.service.kind != "service" else "shared",
            status="pending", deployment_id=route.deployment_id, headers=headers,
            idempotency_key=idempotency_key, created_ms=now, modified_ms=now,
            start_at_ms=now + int(delay_s * 1000) if delay_s > 0 else None,
            deadline_ms=now + int(delay_s * 1000) + total_ms if total_ms else None,
        )

    def create_into(self, changes: Changes, record: InvocationRecord, input_value: bytes,
                    raw_idempotency_key: bytes | None) -> None:
        """Create ``record`` in ``changes``, last in its key's inbox. Only the worker that owns its
        partition does this, so a key's inbox is in the order its owner accepted invocations."""
        record.inbox_seq = self.inbox_clock.next()
        changes.create(record, input_value, raw_idempotency_key)

    def new_invocation_id(self, partition: int) -> str:
        return self._ids.invocation_id(partition)

    def existing(self, raw_idempotency_key: bytes) -> str | None:
        """The invocation already holding this idempotency slot, if any."""
        existing = self._idempotency_inflight.get(raw_idempotency_key)
        if existing is None:
            found = self._store.get_idempotency(raw_idempotency_key)
            existing = found.invocation_id if found else None
        if existing is not None and (existing in self.active or self._store.get_invocation(existing)):
            return existing
        return None

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

    def hold_slot(self, slot: bytes, invocation_id: str) -> None:
        """``slot`` is taken by an invocation not yet committed: a concurrent repeat must see it."""
        self._idempotency_inflight[slot] = invocation_id

    def release_slot(self, slot: bytes) -> None:
        self._idempotency_inflight.pop(slot, None)

    def accept(self, live: Live, slot: bytes | None = None) -> None:
        """A new invocation joins its key's line (or waits for its delay, or its deadline).

        Its creation was submitted; ``slot``, its idempotency slot, is held until that commits."""
        if slot is not None:
            self.hold_slot(slot, live.record.id)
            self._store.submit(Changes()).add_done_callback(lambda _: self.release_slot(slot))
        self.active[live.record.id] = live
        if live.record.deadline_ms is not None:
            self._arm_deadline(live)
        if live.record.start_at_ms is not None:
            self._schedule_at(live, live.record.start_at_ms)
        else:
            self._schedule(live)

    # --- results --------------------------------------------------------------------------------

    async def outcome(self, invocation_id: str) -> InvocationRecord:
        """Wait until the invocation has finished; its final record."""
        live = self.active.get(invocation_id)
        if live is None:
            record = self._store.get_invocation(invocation_id)
            if record is None:
                raise InvocationNotFound(invocation_id)
            return record
        waiter: asyncio.Future[InvocationRecord] = asyncio.get_running_loop().create_future()
        live.waiters.append(waiter)
        try:
            return await waiter
        finally:
            if waiter.cancelled() and waiter in live.waiters:  # the caller gave up waiting
                live.waiters.remove(waiter)

    def current(self, invocation_id: str) -> InvocationRecord:
        """The record as it stands now (live status for unfinished invocations)."""
        live = self.active.get(invocation_id)
        if live is not None:
            return live.record
        record = self._store.get_invocation(invocation_id)
        if record is None:
            raise InvocationNotFound(invocation_id)
        return record

    async def event_page(self, invocation_id: str, after: Place | None, wait_s: float) -> EventPage:
        """What ``invocation_id`` published after ``after`` (waiting up to ``wait_s`` for
        something, if nothing yet), and its end once it has ended and nothing more follows."""
        while True:
            record = self.current(invocation_id)  # InvocationNotFound for an unknown one
            over = invocation_id not in self.active  # its end is durable
            durable, published = self.events.durable(
                invocation_id, partial(self._store.read_journal, invocation_id), running=not over)
            found = sorted([m for m in published if after is None or m[0] > after] + self.events.buffered(
                invocation_id, after, before=self._first_pending_milestone(invocation_id, durable)))
            if found or over or wait_s <= 0:
                break
            await self.events.wait(invocation_id, wait_s)
            wait_s = 0
        events = [StreamEvent(str(place), msgspec.Raw(event)) for place, event in found]
        end = None
        if over and not found:
            end = StreamEnd(record.status, msgspec.Raw(record.output or b"null"), record.failure)
        return EventPage(events, end)

    def _first_pending_milestone(self, invocation_id: str, durable: int) -> Place | None:
        """The place of the first milestone journaled but not durable yet: ephemeral events
        published after it wait until it can go first."""
        live = self.active.get(invocation_id)
        journal = live.journal if live is not None else None
        if journal is not None:
            for index in range(durable, len(journal)):
                if type(journal[index]) is Publish:
                    return Place(index, -1)
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

    def reason(self, invocation_id: str) -> str:
        """Why the invocation is where it is, in one sentence."""
        record = self.current(invocation_id)
        live = self.active.get(invocation_id)
        if record.status == "pending" and record.attempts == 0 and record.start_at_ms is not None \
                and record.start_at_ms > now_ms():
            return f"delayed: starts at {iso_ms(record.start_at_ms)}"
        if record.status == "pending" and live is not None and live.lock_key is not None:
            ahead = self._keys.ahead_of(live.lock_key, live)
            return f"queued behind {ahead + 1} invocation(s) on key {record.key!r}"
        if record.status == "running" and live is not None and live.journal is not None:
            return f"running attempt {record.attempts}, journal at entry {len(live.journal)}"
        if record.status == "backing-off":
            if record.next_retry_ms is None:  # it waits on its deployment: see reachability.py
                return f"backing off: {record.last_error}"
            return f"backing off after attempt {record.attempts} until {iso_ms(record.next_retry_ms)}: " \
                   f"{record.last_error}"
        if record.status == "paused":
            return f"paused after {record.attempts} attempts: {record.last_error}"
        if record.status == "suspended":
            return f"suspended, waiting on journal entry {', '.join(map(str, record.waiting_on))}"
        return record.status

    # --- scheduling -----------------------------------------------------------------------------

    def _schedule_at(self, live: Live, start_at_ms: int) -> None:
        """A delayed start: the invocation joins its key's line only when the delay is over."""
        delay = max(0.0, (start_at_ms - now_ms()) / 1000)
        live.retry_handle = asyncio.get_running_loop().call_later(delay, self._schedule, live)

    def _schedule(self, live: Live) -> None:
        lock_key = live.lock_key
        if lock_key is not None:
            if not self._keys.admit(lock_key, live):
                return  # waits in line, status stays "pending"
            live.holds_key = True
        self._launch(live)

    def _launch(self, live: Live) -> None:
        """Begin an attempt: synchronously when a link is open (the hot path), else connect first.
        Not while the store has no room: the attempt's steps would run and never be journaled."""
        if self._store.full:
            live.retry_handle = asyncio.get_running_loop().call_later(_FULL_STORE_WAIT_S, self._launch, live)
            return
        live.retry_handle = None
        live.record.status = "running"
        pool = self._pool(live.record.deployment_id)
        if pool is None:
            live.record.attempts += 1
            self._retry_later(live, f"deployment {live.record.deployment_id} is not registered any more: "
                                    "resume this invocation on another deployment")
            return
        link = pool.ready()
        if link is not None:
            self._begin(live, link)
        else:
            self.spawn(self._connect_and_begin(live, pool))

    async def _connect_and_begin(self, live: Live, pool: DeploymentPool | InvokePool) -> None:
        if live.record.status != "running":  # killed or paused before this task ran
            return
        deployment_id = live.record.deployment_id
        prober = self._probers.get(deployment_id)
        if prober is None:
            prober = self._probers[deployment_id] = Prober(deployment_id, pool.acquire, self.spawn)
        if prober.down:  # known to be down: wait with the others rather than knock again
            self._wait_reachable(live, prober, None)
            return
        try:
            link = await pool.acquire()
        except LinkError as exc:
            if live.record.status == "running":
                self._wait_reachable(live, prober, str(exc))
            return
        if live.record.status == "running" and live.attempt is None:  # not killed meanwhile
            self._begin(live, link)

    def _wait_reachable(self, live: Live, prober: Prober, error: str | None) -> None:
        """The attempt could not begin: wait for the deployment, spending none of the retry budget."""
        record = live.record
        live.retry_handle = prober.wait(partial(self._reachable, live), error)
        record.status = "backing-off"
        record.next_retry_ms = None
        record.last_error = prober.reason()
        record.modified_ms = now_ms()
        self._persist(record)

    def _reachable(self, live: Live) -> None:
        if self.active.get(live.record.id) is live and live.record.status == "backing-off":
            self._launch(live)

    def _pool(self, deployment_id: str) -> DeploymentPool | InvokePool | None:
        """The links to a deployment; None if it is not registered (any more)."""
        pool = self._pools.get(deployment_id)
        if pool is None:
            record = self._registry.deployments.get(deployment_id) or self._registry.reload().deployments.get(
                deployment_id)
            if record is None:
                return None
            pool = self._pools[deployment_id] = InvokePool(record.uri, self._http) \
                if record.transport == "request-response" \
                else DeploymentPool(record.uri, self._http, self._settings.connections_per_deployment)
        return pool

    def close_deleted_pools(self) -> None:
        """Close the links to deployments that are not registered any more."""
        for deployment_id in [d for d in self._pools if d not in self._registry.deployments]:
            self._probers.pop(deployment_id, None)
            self.spawn(self._pools.pop(deployment_id).close())

    def _begin(self, live: Live, link: Link) -> None:
        record = live.record
        if live.journal is None:
            live.journal = self._store.read_journal(record.id)
        state = None if record.key is None else self.state_edits.current(record.service, record.key)
        record.attempts += 1
        self._metrics.attempts.inc()
        live.attempt = Attempt(self, live, link, self._inactivity_timeout(record))
        input_entry = live.journal[0]
        link.send(encoder.encode(Start(
            record.id, attempt=record.attempts, service=record.service, handler=record.handler, key=record.key,
            input=input_entry.value if type(input_entry) is Input else b"", headers=record.headers,
            journal=live.journal, state=state, seed=_seed(record.id),
            awakeable_key=self._waits.awakeable_key(record.id),
        )))
        if record.cancelled:  # every attempt of a cancelled invocation learns it at once
            link.send(encoder.encode(Cancel(record.id)))

    def _inactivity_timeout(self, record: InvocationRecord) -> float:
        spec = self._registry.handler_spec(record.deployment_id, record.service, record.handler)
        if spec is not None and spec.timeouts.inactivity_ms is not None:
            return spec.timeouts.inactivity_ms / 1000
        return self._settings.inactivity_timeout_s

    # --- retries, ends --------------------------------------------------------------------------

    def _retry_later(self, live: Live, reason: str) -> None:
        if self._closing:
            return
        record = live.record
        spec = self._registry.handler_spec(record.deployment_id, record.service, record.handler)
        policy = RetryPolicy.resolve(spec.retry if spec else RetrySpec(), self._settings)
        record.last_error = reason
        record.modified_ms = now_ms()
        record.failures += 1
        self._metrics.retries.inc()
        live.journal = None  # the next attempt reads the committed journal
        about = {"invocation_id": record.id}
        if policy.exhausted(record.failures):
            record.status = "paused"
            record.next_retry_ms = None
            log.warning("%s attempt %d failed: %s", record.id, record.attempts, reason, extra=about)
            log.warning("%s paused after %d failures in a row (max_attempts %d): resume, cancel or kill it",
                        record.id, record.failures, policy.max_attempts, extra=about)
            self._persist(record)
            return
        delay = policy.delay_s(record.failures)
        log.warning("%s attempt %d failed: %s; backing off %.3f s", record.id, record.attempts, reason, delay,
                    extra=about)
        record.status = "backing-off"
        record.next_retry_ms = record.modified_ms + int(delay * 1000)
        # Retry only once this record is durable: by then every entry of the failed attempt is too.
        self._persist(record).add_done_callback(partial(self._retry_after_commit, live, delay))

    def _retry_after_commit(self, live: Live, delay: float, future: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, future, partial(self._retry_after_commit, live, delay)):
            return
        if live.record.status != "backing-off":
            return
        live.retry_handle = asyncio.get_running_loop().call_later(delay, self._launch, live)

    def _persist(self, record: InvocationRecord) -> asyncio.Future[None]:
        changes = Changes()
        changes.put_invocation(record)
        future = self._store.submit(changes)
        future.add_done_callback(_log_write_error)
        return future

    def _finish(self, live: Live, status: str, output: bytes | None, failure: Failure | None) -> None:
        record = live.record
        record.status = status
        record.output = output
        record.failure = failure
        record.completed_ms = record.modified_ms = now_ms()
        record.next_retry_ms = None
        index = len(live.journal) if live.journal is not None else len(self._store.read_journal(record.id))
        changes = Changes()
        changes.append_entry(record, index, Output(value=output, failure=failure))
        changes.finish(record)
        self._write_end(live, changes)
        self._hand_over_key(live)

    def _write_end(self, live: Live, changes: Changes) -> None:
        self._store.submit(changes).add_done_callback(partial(self._finished, live, changes))

    def _finished(self, live: Live, changes: Changes, future: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, future, partial(self._finished, live, changes)):
            return
        error = future.exception()
        if error is not None:
            # Waiters keep waiting: the end is written once the disk lets us.
            log.error("could not record the end of %s, trying again in 1 s: %s", live.record.id, error,
                      extra={"invocation_id": live.record.id})
            if not self._closing:
                asyncio.get_running_loop().call_later(1.0, self._write_end, live, changes)
            return
        self.active.pop(live.record.id, None)
        record = live.record
        self.calls.child_finished(record)
        self.events.finished(record.id)
        self._metrics.invocations.labels(record.status).inc()
        self._metrics.duration.observe(((record.completed_ms or record.created_ms) - record.created_ms) / 1000)
        for waiter in live.waiters:
            if not waiter.done():
                waiter.set_result(live.record)
        live.waiters.clear()

    def _hand_over_key(self, live: Live) -> None:
        """Let the next invocation on ``live``'s key start.

        This happens as soon as ``live`` has ended, before its end is durable: the successor's
        commands are committed after ``live``'s (one writer, submit order), so a crash that loses
        ``live``'s end loses everything the successor journaled too, and recovery re-runs both in
        arrival order. Its state snapshot includes ``live``'s writes still in flight (see
        ``StateEdits.current``), and operators' edits that waited in line between the two.
        Only the reply to ``live``'s caller waits for the commit.
        """
        lock_key = live.lock_key
        if live.holds_key and lock_key is not None:
            live.holds_key = False
            successor = self.state_edits.release(lock_key)  # edits waiting at the front apply first
            if successor is not None:
                successor.holds_key = True
                self._launch(successor)

    # --- background duties ----------------------------------------------------------------------

    def _sample_gauges(self) -> None:
        self._metrics.active.set(len(self.active))
        self._metrics.running.set(sum(1 for live in self.active.values() if live.attempt is not None))
        self._metrics.callers.set(sum(len(live.waiters) for live in self.active.values()))
        commits, batches = self._store.commits
        self._metrics.group_commits.inc(commits - self._commits_seen[0])
        self._metrics.batches.inc(batches - self._commits_seen[1])
        self._commits_seen = (commits, batches)

    async def _watch_inactivity(self) -> None:
        """Once a period: fail attempts whose handler went silent, and sample the gauges."""
        period = min(1.0, self._settings.inactivity_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            self._sample_gauges()
            self._store.probe()  # while full: a write that commits tells that there is room again
            now = time.monotonic()
            for live in list(self.active.values()):
                attempt = live.attempt
                if attempt is not None and now - attempt.last_activity > attempt.inactivity_timeout_s:
                    self.attempt_failed(
                        attempt, f"no message from the handler for {attempt.inactivity_timeout_s:g} s "
                                 "(inactivity timeout)")

    async def _sweep_retention(self) -> None:
        period = min(60.0, max(1.0, self._settings.retention_s / 10))
        while True:
            await asyncio.sleep(period)
            cutoff = now_ms() - int(self._settings.retention_s * 1000)
            expired = [i for i in self._store.finished_before(cutoff, limit=1000)
                       if self._partitions.owns_invocation(i)]
            if not expired:
                continue
            changes = Changes()
            for invocation_id in expired:
                record = self._store.get_invocation(invocation_id)
                if record is not None:
                    self.purge_into(changes, record)
            try:
                await self._store.submit(changes)
            except StoreError as exc:
                log.error("retention sweep could not write, trying again later: %s", exc)
                continue
            log.info("swept %d invocations past retention", len(expired))


def _log_write_error(future: asyncio.Future[None]) -> None:
    error = None if future.cancelled() else future.exception()  # cancelled: its batch commits anyway
    if error is not None:
        log.error("could not record an invocation's status: %s", error)


