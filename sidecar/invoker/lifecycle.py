"""The life of one invocation, top-down: accepted, queued on its key, attempted over a link to its
handler, retried, suspended and resumed, ended; then its key goes to the next in line.

Ordering guarantees rest on one fact: the store commits batches in the order they were submitted.
An invocation's entries are submitted in the order its handler sent them, and its final record
after all of them, so whatever a later attempt reads from the store is a prefix-complete journal.

What an attempt sends on the way (journal entries, suspensions, its end) is read by
``frames.FrameHandler``, which calls back here with the outcome; waits, calls and promises
complete journal entries and resume suspended invocations through :meth:`Lifecycle.resume`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from functools import partial

from handler_sdk.protocol import Cancel, Failure, Input, Output, Payloads, Start, ToSidecar, encoder

from ..clock import call_at_ms, now_ms, offset_ms as clock_offset_ms
from ..cli.config import Settings
from ..transport.links import Carrier, LinkError
from ..metrics import Metrics
from ..process.partitions import PartitionMap
from ..transport.registry import Route
from ..store import Changes, InvocationRecord, Store
from ..tracing import Tracing
from .admission import Overloaded, admit
from .awakeable_ids import invocation_key
from .background import Background
from .blob_wire import OutgoingBlobs
from .commits import recheck_if_cancelled
from .deadlines import Deadlines
from .deployment_links import LinkSource, Pool
from .factory import RecordFactory
from .growth import GrowthWatch
from .idempotency import idempotency_slot
from .live import Attempt, Live
from .reachability import Prober
from .state_edits import StateEdits
from .table import InvocationTable
from .waits import is_done
from .webhooks import Filed, WebhookOutbox

log = logging.getLogger(__name__)

#: While the store has no room, an attempt due to start looks again this much later.
_FULL_STORE_WAIT_S = 1.0
#: How often an attempt a cluster node may not start yet (its ownership unconfirmed) is tried again.
_UNCONFIRMED_WAIT_S = 0.1


def _seed(invocation_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(invocation_id.encode(), digest_size=8).digest(), "big")


class Lifecycle:
    def __init__(
        self, *, store: Store, table: InvocationTable, factory: RecordFactory, links: LinkSource,
        state_edits: StateEdits, partitions: PartitionMap, settings: Settings, metrics: Metrics,
        background: Background, on_frame: Callable[[Attempt, ToSidecar], None],
        on_end: Callable[[InvocationRecord], None], growth: GrowthWatch, webhooks: WebhookOutbox,
        tracing: Tracing,
    ) -> None:
        self._store = store
        self._table = table
        self._factory = factory
        self._links = links
        self._state_edits = state_edits
        self._partitions = partitions
        self._settings = settings
        self._metrics = metrics
        self._background = background
        #: Every frame of a live attempt (``frames.FrameHandler.on_message``).
        self._on_frame = on_frame
        #: An invocation's end is durable: its caller's call returns, its event stream ends.
        self._on_end = on_end
        self._growth = growth
        self._webhooks = webhooks
        self._tracing = tracing
        self._deadlines = Deadlines(table, self.terminate)
        #: Set during shutdown: attempts cut by our own exit are not the handler's failures.
        self.closing = False

    # --- accepted -----------------------------------------------------------------------------------

    async def submit(
        self, route: Route, key: str | None, body: bytes, headers: dict[str, str], idempotency_key: str | None,
        *, delay_s: float = 0.0, partition: int | None = None, budget: float | None = None,
    ) -> tuple[str, bool]:
        """Journal a new invocation durably and schedule it (``delay_s`` later), capped at
        ``budget`` (the client's ``x-budget``) if given.

        Returns (ID, whether it already existed under this idempotency key).
        """
        record = self._factory.new_record(route, key, headers=headers, idempotency_key=idempotency_key,
                                          partition=partition, delay_s=delay_s)
        record.budget = budget
        raw_idem = idempotency_slot(record)
        if raw_idem is not None and (existing := self._table.existing(raw_idem)) is not None:
            return existing, True
        live = Live(record, [Input(body)])
        lock_key = live.lock_key
        try:
            admit(record, self._settings, unfinished=len(self._table.active),
                  waiting_on_key=self._table.keys.waiting(lock_key) if lock_key and not delay_s else 0)
        except Overloaded as refusal:
            self._metrics.refused.labels("worker" if refusal.whole_worker else "key").inc()
            raise
        changes = Changes()
        self._table.create_into(changes, record, body, raw_idem)
        self._table.active[record.id] = live  # from now on, a kill or a cancel finds it
        await self.create(live, changes, raw_idem)
        return record.id, False

    async def create(self, live: Live, changes: Changes, slot: bytes | None) -> None:
        """Commit ``changes``, which create ``live`` (holding idempotency ``slot``); returns once
        durable. It is accepted then, even if whoever awaits this has given up meanwhile: what
        they await is a future of our own, not the store's."""
        if slot is not None:
            self._table.hold_slot(slot, live.record.id)
        durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._store.submit(changes).add_done_callback(partial(self._created, live, slot, durable))
        await durable

    def _created(self, live: Live, slot: bytes | None, durable: asyncio.Future[None],
                 written: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, written, partial(self._created, live, slot, durable)):
            return
        if slot is not None:
            self._table.release_slot(slot)
        error = written.exception()
        if error is not None:
            self._table.active.pop(live.record.id, None)
        elif not live.record.finished:  # killed or cancelled before it was durable: never launched
            self.accept(live)
        if durable.done():  # its awaiter left
            return
        if error is not None:
            durable.set_exception(error)
        else:
            durable.set_result(None)

    def accept(self, live: Live, slot: bytes | None = None) -> None:
        """A new invocation joins its key's line (or waits for its delay, or its deadline).

        Its creation was submitted; ``slot``, its idempotency slot, is held until that commits."""
        if slot is not None:
            self._table.hold_slot(slot, live.record.id)
            self._store.submit(Changes()).add_done_callback(lambda _: self._table.release_slot(slot))
        self._table.active[live.record.id] = live
        if live.record.deadline_ms is not None:
            self._deadlines.arm(live)
        if live.record.start_at_ms is not None:
            self._schedule_at(live, live.record.start_at_ms)
        else:
            self._schedule(live)

    def readmit(self, live: Live, now: int) -> None:
        """Take back an unfinished invocation found in the store at start-up, where it was."""
        record = live.record
        self._table.active[record.id] = live
        if record.deadline_ms is not None:
            self._deadlines.arm(live)
        if record.attempts == 0 and record.start_at_ms is not None and record.start_at_ms > now:
            self._schedule_at(live, record.start_at_ms)
            return
        lock_key = live.lock_key
        if lock_key is not None:
            if not self._table.keys.admit(lock_key, live):
                record.status = "pending"
                return
            live.holds_key = True
        if record.status == "paused":
            return
        if record.status == "suspended":
            journal = self._store.read_journal(record.id)
            if not any(i < len(journal) and is_done(journal[i]) for i in record.waiting_on):
                return  # still waiting: its timers are reloaded by the waits
        if record.status == "backing-off" and record.next_retry_ms is not None:
            live.retry_handle = call_at_ms(record.next_retry_ms, self.launch, live)
        else:
            self.launch(live)

    # --- queued, then attempted -----------------------------------------------------------------------

    def _schedule_at(self, live: Live, start_at_ms: int) -> None:
        """A delayed start: the invocation joins its key's line only when the delay is over."""
        live.retry_handle = call_at_ms(start_at_ms, self._schedule, live)

    def _schedule(self, live: Live) -> None:
        lock_key = live.lock_key
        if lock_key is not None:
            if not self._table.keys.admit(lock_key, live):
                return  # waits in line, status stays "pending"
            live.holds_key = True
        self.launch(live)

    def launch(self, live: Live) -> None:
        """Begin an attempt: synchronously when a link is open (the hot path), else connect first.
        Not while the store has no room (the attempt's steps would run and never be journaled), nor
        while a cluster node cannot confirm it still owns the partition."""
        if self._store.full or not self._store.serves(live.record.id):
            delay = _FULL_STORE_WAIT_S if self._store.full else _UNCONFIRMED_WAIT_S
            live.retry_handle = asyncio.get_running_loop().call_later(delay, self.launch, live)
            return
        live.retry_handle = None
        live.record.status = "running"
        pool = self._links.pool(live.record.deployment_id)
        if pool is None:
            live.record.attempts += 1
            self.retry_later(live, f"deployment {live.record.deployment_id} is not registered any more: "
                                   "resume this invocation on another deployment")
            return
        link = pool.ready()
        if link is not None:
            self._begin(live, link)
        else:
            self._background.spawn(self._connect_and_begin(live, pool))

    async def _connect_and_begin(self, live: Live, pool: Pool) -> None:
        if live.record.status != "running":  # killed or paused before this task ran
            return
        prober = self._links.prober(live.record.deployment_id, pool)
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
            if self._store.serves(live.record.id):
                self._begin(live, link)
            else:
                self.launch(live)  # waits there for the confirmation

    def _wait_reachable(self, live: Live, prober: Prober, error: str | None) -> None:
        """The attempt could not begin: wait for the deployment, spending none of the retry budget."""
        record = live.record
        live.retry_handle = prober.wait(partial(self._reachable, live), error)
        record.status = "backing-off"
        record.next_retry_ms = None
        record.last_error = prober.reason()
        record.modified_ms = now_ms()
        self.persist(record)

    def _reachable(self, live: Live) -> None:
        if self._table.active.get(live.record.id) is live and live.record.status == "backing-off":
            self.launch(live)

    def _begin(self, live: Live, link: Carrier) -> None:
        record = live.record
        if live.journal is None:
            live.journal = self._store.read_journal(record.id)
        state = None if record.key is None else self._state_edits.current(record.service, record.key)
        self._growth.started(live, state)
        record.attempts += 1
        self._metrics.attempts.inc()
        threshold = self._store.blob_threshold if self._links.blob_refs(record) else 0  # 0: no references
        blobs = OutgoingBlobs(threshold, link.held, self._store.blob_memo.ref)
        live.attempt = Attempt(self, live, link, self._links.inactivity_timeout_s(record), blobs)
        input_value, journal, state = blobs.start_payloads(live.journal, state, live.journal_bytes + live.state_bytes)
        link.send(encoder.encode(Start(
            record.id, attempt=record.attempts, service=record.service, handler=record.handler, key=record.key,
            input=input_value, headers=record.headers, journal=journal, state=state,
            seed=_seed(record.id), awakeable_key=invocation_key(self._store.awakeable_secret, record.id),
            budget=record.budget, payloads=Payloads(blob_threshold=blobs.threshold, blobs=blobs.sent,
                                                    max_payload_bytes=self._settings.max_payload_bytes,
                                                    refs=bool(blobs.sources)),
            trace=self._tracing.attempt(live, live.attempt), clock_offset_ms=clock_offset_ms(),
        )))
        if record.cancelled:  # every attempt of a cancelled invocation learns it at once
            link.send(encoder.encode(Cancel(record.id)))

    def on_message(self, attempt: Attempt, message: ToSidecar) -> None:
        self._on_frame(attempt, message)

    def resume(self, live: Live) -> None:
        """A suspended invocation's wait is over: a new attempt replays the longer journal."""
        live.record.waiting_on = []
        live.journal = None
        self.launch(live)

    # --- failed, retried --------------------------------------------------------------------------------

    def attempt_failed(self, attempt: Attempt, reason: str) -> None:
        if attempt.over:
            return
        attempt.detach(kill=True)
        self.retry_later(attempt.live, reason)

    def write_failed(self, live: Live, attempt: Attempt | None, error: str) -> None:
        """A journal write of ``live``'s attempt (``None``: one that has detached) failed. For want
        of room that is no failure of the handler: the attempt stops and the invocation waits for
        room, spending none of its retry budget. A batch refused for what it held counts."""
        if attempt is not None and attempt.over:
            return
        if not self._store.full:
            if attempt is not None:
                self.attempt_failed(attempt, f"journal write failed: {error}")
            else:
                self.retry_later(live, f"journal write failed: {error}")
            return
        if attempt is not None:
            attempt.detach(kill=True)
        if self.closing:
            return
        record = live.record
        live.journal = None  # the next attempt reads the committed journal
        record.status = "backing-off"
        record.next_retry_ms = None
        record.last_error = f"journal write failed, waiting for room in the store: {error}"
        record.modified_ms = now_ms()
        live.retry_handle = asyncio.get_running_loop().call_later(_FULL_STORE_WAIT_S, self.launch, live)

    def retry_later(self, live: Live, reason: str) -> None:
        if self.closing:
            return
        record = live.record
        policy = self._links.retry_policy(record)
        record.last_error = reason
        record.modified_ms = now_ms()
        record.failures += 1
        self._metrics.retries.inc()
        about = {"invocation_id": record.id}
        if policy.exhausted(record.failures):
            record.status = "paused"
            record.next_retry_ms = None
            log.warning("%s attempt %d failed: %s", record.id, record.attempts, reason, extra=about)
            log.warning("%s paused after %d failures in a row (max_attempts %d): resume, cancel or kill it",
                        record.id, record.failures, policy.max_attempts, extra=about)
            self.paused(live)
            return
        live.journal = None  # the next attempt reads the committed journal
        delay = policy.delay_s(record.failures)
        log.warning("%s attempt %d failed: %s; backing off %.3f s", record.id, record.attempts, reason, delay,
                    extra=about)
        self.back_off(live, reason, delay)

    def back_off(self, live: Live, reason: str, delay: float) -> None:
        """Try ``live`` again ``delay`` seconds from now (its attempt is over), with ``reason``
        shown meanwhile; counts no failure (``retry_later`` does, then comes here)."""
        if self.closing:
            return
        record = live.record
        live.journal = None  # the next attempt reads the committed journal
        record.last_error = reason
        record.modified_ms = now_ms()
        record.status = "backing-off"
        record.next_retry_ms = record.modified_ms + int(delay * 1000)
        # Retry only once this record is durable: by then every entry of the failed attempt is too.
        self.persist(record).add_done_callback(partial(self._retry_after_commit, live, delay))

    def _retry_after_commit(self, live: Live, delay: float, future: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, future, partial(self._retry_after_commit, live, delay)):
            return
        if live.record.status != "backing-off":
            return
        if live.record.cancelled:  # cancelled while this record was being written: no waiting
            live.retry_handle = asyncio.get_running_loop().call_soon(self.launch, live)
            return
        # A wall-clock wait like any other (a test clock's advance skips it), until the instant
        # stored as next_retry_ms: the one a restart waits for too.
        due_ms = live.record.next_retry_ms
        live.retry_handle = call_at_ms(due_ms if due_ms is not None else now_ms() + int(delay * 1000), self.launch, live)

    def paused(self, live: Live) -> None:
        """Write ``live`` as ``paused`` (its status set, its attempt over), with its webhook; its
        next attempt reads the committed journal."""
        changes = Changes()
        changes.put_invocation(live.record)
        filed = self._webhooks.file(changes, live.record, live.journal)
        live.journal = None
        future = self._store.submit(changes)
        future.add_done_callback(_log_write_error)
        future.add_done_callback(partial(self._webhooks.committed, filed))

    def persist(self, record: InvocationRecord) -> asyncio.Future[None]:
        """Write ``record`` as it stands (a status change); the future: durable."""
        changes = Changes()
        changes.put_invocation(record)
        future = self._store.submit(changes)
        future.add_done_callback(_log_write_error)
        return future

    # --- ended ------------------------------------------------------------------------------------------

    def terminate(self, live: Live, status: str, failure: Failure) -> None:
        """End ``live`` now, wherever it is: no more handler code runs for it."""
        if live.attempt is not None:
            live.attempt.detach(kill=True)
        if live.retry_handle is not None:
            live.retry_handle.cancel()
            live.retry_handle = None
        lock_key = live.lock_key
        if lock_key is not None and not live.holds_key:
            self._table.keys.withdraw(lock_key, live)
        self.finish(live, status, None, failure)

    def finish(self, live: Live, status: str, output: bytes | None, failure: Failure | None) -> None:
        record = live.record
        record.status = status
        record.output = output
        record.failure = failure
        record.completed_ms = record.modified_ms = now_ms()
        record.next_retry_ms = None
        journal = live.journal if live.journal is not None else self._store.read_journal(record.id)
        changes = Changes()
        changes.append_entry(record, len(journal), Output(value=output, failure=failure))
        changes.finish(record)
        self._write_end(live, changes, self._webhooks.file(changes, record, journal))
        self._hand_over_key(live)

    def _write_end(self, live: Live, changes: Changes, filed: Filed | None) -> None:
        self._store.submit(changes).add_done_callback(partial(self._finished, live, changes, filed))

    def _finished(self, live: Live, changes: Changes, filed: Filed | None, future: asyncio.Future[None]) -> None:
        if recheck_if_cancelled(self._store, future, partial(self._finished, live, changes, filed)):
            return
        error = future.exception()
        if error is not None:
            # Waiters keep waiting: the end is written once the disk lets us.
            log.error("could not record the end of %s, trying again in 1 s: %s", live.record.id, error,
                      extra={"invocation_id": live.record.id})
            if not self.closing:
                asyncio.get_running_loop().call_later(1.0, self._write_end, live, changes, filed)
            return
        self._webhooks.committed(filed, future)
        self._table.active.pop(live.record.id, None)
        record = live.record
        self._on_end(record)
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
            successor = self._state_edits.release(lock_key)  # edits waiting at the front apply first
            if successor is not None:
                successor.holds_key = True
                self.launch(successor)


def _log_write_error(future: asyncio.Future[None]) -> None:
    error = None if future.cancelled() else future.exception()  # cancelled: its batch commits anyway
    if error is not None:
        log.error("could not record an invocation's status: %s", error)
