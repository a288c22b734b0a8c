"""Spans for the steps an attempt runs, children of the sidecar's attempt span (``Start.trace``).

A step replayed from the journal ran in an earlier attempt, which made its span: it makes none.
A step that runs makes one from its first try to its ``Run`` entry (so a step cut off by a crash
has none, and its re-run in the next attempt has the only one).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .protocol import Run, Start

_W3C = TraceContextTextMapPropagator()


class StepSpans:
    """Where one attempt's step spans go: under its span, through ``tracer``."""

    def __init__(self, tracer: Tracer, attempt: Context, invocation_id: str) -> None:
        self._tracer = tracer
        self._attempt = attempt
        self._invocation_id = invocation_id

    @classmethod
    def of(cls, tracer: Tracer | None, start: Start) -> StepSpans | None:
        """``start``'s step spans; None where this process or the sidecar does not trace, or the
        sampler dropped the trace (then no span is built)."""
        if tracer is None or start.trace is None:
            return None
        attempt = _W3C.extract(start.trace)
        if not trace.get_current_span(attempt).get_span_context().trace_flags.sampled:
            return None
        return cls(tracer, attempt, start.invocation_id)

    def begin(self, name: str, index: int) -> Span:
        return self._tracer.start_span(f"step {name}", self._attempt, attributes={
            "invocation.id": self._invocation_id, "step.name": name, "step.index": index})

    @staticmethod
    def end(span: Span, entry: Run) -> None:
        """The step produced ``entry``: what it says of the tries goes on the span."""
        span.set_attribute("step.attempts", entry.attempts)
        span.set_attribute("step.variant", entry.variant)
        if entry.cost is not None:
            span.set_attribute("step.cost", entry.cost)
        if entry.failure is not None:
            span.set_attribute("step.error", entry.failure.message)
            span.set_status(Status(StatusCode.ERROR, entry.failure.message))
        span.end()
