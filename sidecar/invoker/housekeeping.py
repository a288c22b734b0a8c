"""The invoker's periodic duties: failing attempts whose handler went silent, sampling gauges,
and sweeping finished invocations past their retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..clock import now_ms
from ..cli.config import Settings
from ..metrics import Metrics
from ..ids import partition_of_id
from ..process.partitions import PartitionMap
from ..store import Changes, InvocationRecord, Store, StoreError
from .live import Attempt
from .table import InvocationTable

log = logging.getLogger(__name__)

#: Invocations purged per batch of the retention sweep.
_SWEEP_PAGE = 1000


class AttemptFailures(Protocol):
    def attempt_failed(self, attempt: Attempt, reason: str) -> None: ...


class Purger(Protocol):
    def purge_into(self, changes: Changes, record: InvocationRecord) -> None: ...


class Housekeeping:
    def __init__(
        self, *, store: Store, table: InvocationTable, failures: AttemptFailures, purger: Purger,
        partitions: PartitionMap, settings: Settings, metrics: Metrics, pending_timers: Callable[[], int],
    ) -> None:
        self._store = store
        self._table = table
        self._failures = failures
        self._purger = purger
        self._partitions = partitions
        self._settings = settings
        self._metrics = metrics
        self._commits_seen = (0, 0)
        self._pending_timers = pending_timers
        #: Services whose inbox gauges were set: one whose inbox emptied is set to 0, not left as it was.
        self._inbox_services: set[str] = set()

    async def watch_inactivity(self) -> None:
        """Once a period: fail attempts whose handler went silent, and sample the gauges."""
        period = min(1.0, self._settings.inactivity_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            self._sample_gauges()
            self._store.probe()  # while full: a write that commits tells that there is room again
            now = time.monotonic()
            for live in list(self._table.active.values()):
                attempt = live.attempt
                if attempt is not None and now - attempt.last_activity > attempt.inactivity_timeout_s:
                    self._failures.attempt_failed(
                        attempt, f"no message from the handler for {attempt.inactivity_timeout_s:g} s "
                                 "(inactivity timeout)")

    async def sweep_retention(self) -> None:
        """Once a period, purge what finished longer than the retention ago: a page at a time,
        and page after page while full ones come (a load that finishes more invocations a period
        than a page holds must not outgrow the sweep), yielding to the loop between pages."""
        period = min(60.0, max(1.0, self._settings.retention_s / 10))
        while True:
            await asyncio.sleep(period)
            swept, more = 0, True
            while more:
                purged, more = await self._sweep_page()
                swept += purged
                await asyncio.sleep(0)
            if swept:
                log.info("swept %d invocations past retention", swept)

    async def _sweep_page(self) -> tuple[int, bool]:
        """Purge one page of expired invocations this worker owns: how many, and whether a next
        page may hold more of them (this one was full, and it made progress)."""
        cutoff = now_ms() - int(self._settings.retention_s * 1000)
        found = self._store.finished_before(cutoff, limit=_SWEEP_PAGE)
        # One batch per partition: in cluster mode each partition's batches go to its own log
        # (one writer still commits them together on one machine).
        by_partition: dict[int, Changes] = {}
        purged = 0
        for invocation_id in found:
            if self._partitions.owns_invocation(invocation_id) \
                    and (record := self._store.get_invocation(invocation_id)) is not None:
                self._purger.purge_into(by_partition.setdefault(partition_of_id(invocation_id) or 0, Changes()), record)
                purged += 1
        if not purged:
            return 0, False
        outcomes = await asyncio.gather(*(self._store.submit(changes) for changes in by_partition.values()),
                                        return_exceptions=True)
        try:
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        except StoreError as exc:
            log.error("retention sweep could not write, trying again later: %s", exc)
            return 0, False
        return purged, len(found) == _SWEEP_PAGE

    def _sample_gauges(self) -> None:
        active = self._table.active.values()
        running = callers = 0
        waiting: dict[str, int] = {}
        oldest: dict[str, int] = {}
        for live in active:
            running += live.attempt is not None
            callers += len(live.waiters)
            record = live.record
            if record.status == "pending":
                service = record.service
                waiting[service] = waiting.get(service, 0) + 1
                oldest[service] = min(oldest.get(service, record.created_ms), record.created_ms)
        self._metrics.flush()
        self._metrics.active.set(len(active))
        self._metrics.running.set(running)
        self._metrics.callers.set(callers)
        self._metrics.timers.set(self._pending_timers())
        now = now_ms()
        for service in self._inbox_services | waiting.keys():
            self._metrics.inbox_depth.labels(service).set(waiting.get(service, 0))
            self._metrics.inbox_oldest.labels(service).set((now - oldest[service]) / 1000 if service in oldest else 0)
        self._inbox_services |= waiting.keys()
        commits, batches = self._store.commits
        self._metrics.group_commits.inc(commits - self._commits_seen[0])
        self._metrics.batches.inc(batches - self._commits_seen[1])
        self._commits_seen = (commits, batches)
