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

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_DURATION_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class Metrics:
    def __init__(self) -> None:
        self._shared = bool(os.environ.get(MULTIPROC_ENV))
        # Shared mode: values go to the multiprocess files, whatever registry they are in.
        registry = None if self._shared else CollectorRegistry()
        self._registry = registry
        self.invocations = Counter(
            "sidecar_invocations_finished", "Invocations that reached a final status.", ["status"],
            registry=registry)
        self.refused = Counter(
            "sidecar_invocations_refused", "New invocations from clients refused because a key's line (key) "
            "or the worker (worker) was full.", ["limit"], registry=registry)
        self.attempts = Counter("sidecar_attempts_started", "Attempts sent to handlers.", registry=registry)
        self.retries = Counter(
            "sidecar_attempts_failed", "Attempts that failed and were retried or paused.", registry=registry)
        self.cost = Counter(
            "sidecar_cost", "What steps cost, in the unit their handlers report, counted as each step's entry is "
            "journaled (a replayed step is not counted again).", ["service", "handler", "step"], registry=registry)
        self.growth_warnings = Counter(
            "sidecar_growth_warnings", "Invocations whose journal (kind journal) or key state (kind state) grew "
            "past its warn_*_bytes setting.", ["kind"], registry=registry)
        self.duration = Histogram(
            "sidecar_invocation_duration_seconds", "From acceptance to final status.", buckets=_DURATION_BUCKETS,
            registry=registry)
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
        # Sampled by the admin at each scrape from the store, which every worker shares.
        self.blobs = gauge("sidecar_blobs", "Payloads stored as blobs, once per content.", "livemax")
        self.blob_bytes = gauge("sidecar_blob_bytes", "What the stored blobs take, compressed (their database's pages).",
                                "livemax")

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

    def set_limit_counts(self, name: str, in_use: int, waiting: int) -> None:
        self.limit_in_use.labels(name).set(in_use)
        self.limit_waiting.labels(name).set(waiting)

    def set_breaker_open(self, name: str, is_open: bool) -> None:
        self.breaker_open.labels(name).set(1 if is_open else 0)

    def exposition(self) -> bytes:
        if self._shared:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        assert self._registry is not None
        return generate_latest(self._registry)
