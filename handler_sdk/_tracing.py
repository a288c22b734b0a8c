"""Spans for the steps an attempt runs, children of the sidecar's attempt span (``Start.trace``).

A step replayed from the journal ran in an earlier attempt, which made its span: it makes none.
A step that runs makes one from its first try to its ``Run`` entry (so a step cut off by a crash
has none, and its re-run in the next attempt has the only one). The sidecar's sampling decision,
in the ``traceparent``'s flags, holds for them: a trace it dropped gets no step span built.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .otel import Exporter, exporter
from .protocol import Run, Start

_W3C = TraceContextTextMapPropagator()


class StepTracer:
    """A handler service's step spans: the exporter they go to, and each traced attempt's
    :class:`StepSpans`. Made only where tracing is on (``_tracing_setup.step_tracer``)."""

    def __init__(self, export: Exporter) -> None:
        self._export = export

    @classmethod
    def from_environment(cls) -> StepTracer | None:
        """The tracer the ``OTEL_*`` variables configure; None where they leave export off."""
        export = exporter("handler_sdk", "handler-service")
        return None if export is None else cls(export)

    def attempt(self, start: Start) -> StepSpans | None:
        """``start``'s step spans; None where the sidecar does not trace, or the trace was sampled out."""
        if start.trace is None:
            return None
        attempt = trace.get_current_span(_W3C.extract(start.trace)).get_span_context()
        if not attempt.is_valid or not attempt.trace_flags.sampled:
            return None
        return StepSpans(self._export, attempt.trace_id, attempt.span_id)

    def shutdown(self) -> None:
        """Export the spans still in the batch (``Exporter.shutdown``: blocks, briefly)."""
        self._export.shutdown()


class StepSpans:
    """Where one attempt's step spans go: under its span, through ``export``."""

    def __init__(self, export: Exporter, trace_id: int, attempt_span_id: int) -> None:
        self._export = export
        self._trace_id = trace_id
        self._parent = attempt_span_id

    @staticmethod
    def begin() -> int:
        """A step starts: its span's start."""
        return time.time_ns()

    def end(self, started_ns: int, index: int, entry: Run) -> None:
        """The step produced ``entry``: its span, with what the entry says of its tries."""
        attributes: dict[str, str | int | float] = {
            "step.name": entry.name, "step.index": index, "step.attempts": entry.attempts, "step.variant": entry.variant}
        if entry.cost is not None:
            attributes["step.cost"] = entry.cost
        error = None if entry.failure is None else entry.failure.message
        if error is not None:
            attributes["step.error"] = error
        self._export.record(f"step {entry.name}", self._trace_id, self._export.new_span_id(), self._parent,
                            kind=SpanKind.INTERNAL, start_ns=started_ns, end_ns=time.time_ns(),
                            attributes=attributes, error=error)
