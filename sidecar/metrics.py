"""Prometheus metrics (``GET /metrics`` on the admin port), with prometheus-client.

With several workers, each process writes its values to files in a shared directory
(prometheus-client's multiprocess mode, set up by the supervisor) and the admin endpoint sums
them, so one scrape sees the whole sidecar.
"""

from __future__ import annotations

import os
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from .tallies import CounterTally, HistogramTally, Labelled, Tally

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_DURATION_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self._shared = bool(os.environ.get(MULTIPROC_ENV))
        # Shared mode: values go to the multiprocess files, whatever registry they are in.
        registry = None if self._shared else CollectorRegistry()
        self._registry = registry
        #: Hot-path metrics, added up until ``flush``.
        self._tallies: list[Tally] = []
        self.invocations = self._labelled_counter(Counter(
            "sidecar_invocations_finished", "Invocations that reached a final status.", ["status"],
            registry=registry))
        self.refused = Counter(
            "sidecar_invocations_refused", "New invocations from clients refused because a key's line (key) "
            "or the worker (worker) was full.", ["limit"], registry=registry)
        self.attempts = self._counter(Counter("sidecar_attempts_started", "Attempts sent to handlers.", registry=registry))
        self.retries = Counter(
            "sidecar_attempts_failed", "Attempts that failed and were retried or paused.", registry=registry)
        self.cost = Counter(
            "sidecar_cost", "What steps cost, in the unit their handlers report, counted as each step's entry is "
            "journaled (a replayed step is not counted again).", ["service", "handler", "step"], registry=registry)
        self.growth_warnings = Counter(
            "sidecar_growth_warnings", "Invocations whose journal (kind journal) or key state (kind state) grew "
            "past its warn_*_bytes setting.", ["kind"], registry=registry)
        self.duration = self._histogram(Histogram(
            "sidecar_invocation_duration_seconds", "From acceptance to final status.", buckets=_DURATION_BUCKETS,
            registry=registry), _DURATION_BUCKETS)
        self.suspensions = self._counter(Counter(
            "sidecar_suspensions", "Attempts that ended suspended, waiting on a timer, an awakeable, a promise or a "
            "call, holding nothing in the handler service.", registry=registry))
        self.http_responses = self._labelled_counter(Counter(
            "sidecar_http_responses", "HTTP responses by API (ingress, admin) and status code.", ["api", "code"],
            registry=registry))
        self.step_seconds = self._labelled_histogram(Histogram(
            "sidecar_step_duration_seconds", "Steps (ctx.run) journaled, from the start of their first try to their "
            "outcome, retries and backoffs included, per service.", ["service"], buckets=_DURATION_BUCKETS,
            registry=registry), _DURATION_BUCKETS)
        self.commit_seconds = self._histogram(Histogram(
            "sidecar_commit_seconds", "From sending a group of write batches to the writer to its durable commit "
            "(the oldest batch of each group commit).", buckets=_COMMIT_BUCKETS, registry=registry), _COMMIT_BUCKETS)
        self.group_size = self._histogram(Histogram(
            "sidecar_group_commit_batches", "Write batches of this process covered by one group commit.",
            buckets=_GROUP_BUCKETS, registry=registry), _GROUP_BUCKETS)
        self.group_commits = Counter(
            "sidecar_group_commits", "Durable commits that covered this process's batches.", registry=registry)
        self.batches = Counter(
            "sidecar_committed_batches", "Write batches made durable (divide by group commits for the mean "
            "group size).", registry=registry)
        def gauge(name: str, documentation: str, mode: Literal["livesum", "livemax"] = "livesum") -> Gauge:
            return Gauge(name, documentation, multiprocess_mode=mode, registry=registry)

        self.active = gauge("sidecar_active_invocations", "Invocations not yet finished.")
        self.callers = gauge("sidecar_waiting_callers",
                             "Client requests waiting for an invocation's result (calls, attaches).")
        self.running = gauge("sidecar_running_attempts",
                             "Attempts a handler is running now (suspended invocations hold none).")
        self.state_edits_waiting = gauge(
            "sidecar_state_edits_waiting", "Operators' state edits waiting for their key (held by an exclusive "
            "invocation).")
        self.timers = gauge("sidecar_timers_pending", "Durable timers (sleeps) scheduled and not yet fired.")
        self.inbox_depth = Gauge(
            "sidecar_inbox_depth", "Invocations accepted and waiting to start (their key held, or their worker "
            "busy), per service.", ["service"], multiprocess_mode="livesum", registry=registry)
        self.inbox_oldest = Gauge(
            "sidecar_inbox_oldest_age_seconds", "How long the oldest invocation waiting to start has waited, per "
            "service.", ["service"], multiprocess_mode="livemax", registry=registry)
        # Sampled by the admin at each scrape from the store, which every worker shares.
        self.blobs = gauge("sidecar_blobs", "Payloads stored as blobs, once per content.", "livemax")
        self.blob_bytes = gauge("sidecar_blob_bytes", "What the stored blobs take, compressed (their database's pages).",
                                "livemax")
        self.store_file_bytes = gauge("sidecar_store_file_bytes", "The LMDB data file's size on disk.", "livemax")
        self.store_used_bytes = gauge("sidecar_store_used_bytes", "Bytes in the LMDB pages that hold data (free "
                                      "pages, reused by later writes, not counted).", "livemax")
        self.store_map_bytes = gauge("sidecar_store_map_bytes", "The LMDB map size (map_size_bytes): writes past "
                                     "it are refused with 503 until purges make room.", "livemax")

        self.breaker_open = Gauge(
            "sidecar_breaker_open", "1 while a circuit breaker is open or half-open, 0 while it is closed.",
            ["name"], multiprocess_mode="livesum", registry=registry)

        self.limit_in_use = Gauge(
            "sidecar_limit_slots_in_use", "Steps of a limit group holding a slot (running, or granted to a parked "
            "invocation).", ["name"], multiprocess_mode="livesum", registry=registry)
        self.limit_waiting = Gauge(
            "sidecar_limit_waiting", "Steps waiting in a limit group's line for a slot.", ["name"],
            multiprocess_mode="livesum", registry=registry)

        self.webhook_backlog = Gauge(
            "sidecar_webhook_backlog", "Webhooks filed and not yet delivered, per receiver.", ["receiver"],
            multiprocess_mode="livesum", registry=registry)
        self.webhook_deliveries = Counter(
            "sidecar_webhook_deliveries", "Webhook tries per receiver: delivered, failed (tried again), expired "
            "(undelivered past the retention), dropped (its receiver no longer configured).", ["receiver", "outcome"],
            registry=registry)
        self.schedule_firings = Counter(
            "sidecar_schedule_firings", "Schedules' fire times, by what became of them: fired (an invocation made), "
            "repeated (made before a restart, found by its idempotency key), skipped (the previous firing had not "
            "finished), missed (passed while the sidecar was down, not made up for per catch_up), failed (the "
            "target refused it), deferred (the sidecar could not take it then: tried again).", ["outcome"],
            registry=registry)

    def observe_commit(self, seconds: float, batches: int) -> None:
        self.commit_seconds.observe(seconds)
        self.group_size.observe(batches)

    def set_limit_counts(self, name: str, in_use: int, waiting: int) -> None:
        self.limit_in_use.labels(name).set(in_use)
        self.limit_waiting.labels(name).set(waiting)

    def set_breaker_open(self, name: str, is_open: bool) -> None:
        self.breaker_open.labels(name).set(1 if is_open else 0)

    # --- tallies ------------------------------------------------------------------------------

    def _counter(self, counter: Counter) -> CounterTally:
        tally = CounterTally(counter)
        self._tallies.append(tally)
        return tally

    def _histogram(self, histogram: Histogram, buckets: tuple[float, ...]) -> HistogramTally:
        tally = HistogramTally(histogram, buckets)
        self._tallies.append(tally)
        return tally

    def _labelled_counter(self, counter: Counter) -> Labelled[CounterTally]:
        return Labelled(lambda values: self._counter(counter.labels(*values)))

    def _labelled_histogram(self, histogram: Histogram, buckets: tuple[float, ...]) -> Labelled[HistogramTally]:
        return Labelled(lambda values: self._histogram(histogram.labels(*values), buckets))

    def flush(self) -> None:
        """Hand what the tallies added up to prometheus-client (see ``tallies``)."""
        for tally in self._tallies:
            tally.flush()

    def exposition(self) -> bytes:
        if self._shared:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        assert self._registry is not None
        return generate_latest(self._registry)
