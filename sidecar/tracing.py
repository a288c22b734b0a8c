"""OpenTelemetry spans for invocations and their attempts (docs/operations.md#tracing).

On where the standard ``OTEL_*`` variables name an OTLP endpoint (``handler_sdk.otel``); off,
every method returns at its first line and no span is built.

An invocation's span is made once, when its end is durable, as a finished span: its IDs were
chosen when it was accepted and stored in its record (``TraceIds``), and it starts at the record's
``created_ms``. So every attempt, in this process or after a restart, is a child of the same span,
and a crash before the end leaves no half span behind. An attempt's span runs from its ``Start``
to the attempt's end; its context goes to the handler in ``Start.trace``, and the SDK's step
spans are its children.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from handler_sdk.otel import Exporting, exporting

from .store.records import InvocationRecord, TraceIds

if TYPE_CHECKING:  # the invoker imports this module
    from .invoker.live import Attempt, Live

_SCOPE = InstrumentationScope("sidecar")
_W3C = TraceContextTextMapPropagator()
_ERRORS = frozenset({"failed", "killed", "cancelled", "backing-off", "paused"})


def _target(record: InvocationRecord) -> str:
    return f"{record.service}/{record.key}/{record.handler}" if record.key is not None \
        else f"{record.service}/{record.handler}"


def _context(ids: TraceIds) -> SpanContext:
    return SpanContext(int(ids.trace_id, 16), int(ids.span_id, 16), is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED if ids.sampled else TraceFlags.DEFAULT))


class Tracing:
    """The spans of one worker's invocations; ``Tracing(None)`` makes none."""

    def __init__(self, export: Exporting | None) -> None:
        self._export = export
        self._tracer = None if export is None else export.provider.get_tracer("sidecar")

    @classmethod
    def from_environment(cls) -> Tracing:
        return cls(exporting("sidecar"))

    def accepted(self, headers: Mapping[str, str]) -> TraceIds | None:
        """The IDs of a new invocation's span, continuing the caller's ``traceparent`` if any;
        the sampler decides here, once, for the whole invocation."""
        if self._export is None:
            return None
        incoming = _W3C.extract(headers)
        parent = trace.get_current_span(incoming).get_span_context()
        ids = self._export.provider.id_generator
        trace_id = parent.trace_id if parent.is_valid else ids.generate_trace_id()
        decision = self._export.provider.sampler.should_sample(incoming, trace_id, "invocation", SpanKind.SERVER)
        return TraceIds(trace_id=f"{trace_id:032x}", span_id=f"{ids.generate_span_id():016x}",
                        parent_span_id=f"{parent.span_id:016x}" if parent.is_valid else None,
                        sampled=decision.decision is Decision.RECORD_AND_SAMPLE)

    def attempt(self, live: Live, attempt: Attempt) -> dict[str, str] | None:
        """Open ``attempt``'s span (ended once it is over); the trace context to send the handler."""
        ids = live.record.trace
        if self._tracer is None or ids is None:
            return None
        parent = trace.set_span_in_context(NonRecordingSpan(_context(ids)))
        if not ids.sampled:  # the handler's spans follow the decision; none is built here
            carrier: dict[str, str] = {}
            _W3C.inject(carrier, parent)
            return carrier
        record = live.record
        span = self._tracer.start_span(f"attempt {record.service}/{record.handler}", parent, kind=SpanKind.CLIENT, attributes={
            "invocation.id": record.id, "invocation.target": _target(record), "attempt.number": record.attempts})
        attempt.when_over(partial(_detached, span, live))
        carrier = {}
        _W3C.inject(carrier, trace.set_span_in_context(span))
        return carrier


    def finished(self, record: InvocationRecord) -> None:
        """``record``'s end is durable: its span, from its acceptance (as its record says, whichever
        process accepted it) to now, is recorded."""
        ids = record.trace
        if self._export is None or ids is None or not ids.sampled:
            return
        parent = None if ids.parent_span_id is None else SpanContext(
            int(ids.trace_id, 16), int(ids.parent_span_id, 16), is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED))
        status = Status(StatusCode.ERROR, _error(record)) if record.status in _ERRORS else Status(StatusCode.OK)
        self._export.processor.on_end(ReadableSpan(
            name=f"invocation {record.service}/{record.handler}",
            context=_context(ids), parent=parent, resource=self._export.provider.resource, kind=SpanKind.SERVER,
            attributes={"invocation.id": record.id, "invocation.target": _target(record),
                        "invocation.status": record.status, "invocation.attempts": record.attempts},
            status=status, start_time=record.created_ms * 1_000_000, end_time=time.time_ns(),
            instrumentation_scope=_SCOPE))

    def shutdown(self) -> None:
        """Export what is pending (bounded by the exporter's timeout); blocks."""
        if self._export is not None:
            self._export.provider.shutdown()


def _detached(span: Span, live: Live) -> None:
    """The attempt is over: its span ends now, and is closed on the next turn of the event loop,
    once whoever detached it has set the status that follows, which says how it went."""
    asyncio.get_running_loop().call_soon(_close, span, live, time.time_ns())


def _close(span: Span, live: Live, ended_ns: int) -> None:
    record = live.record
    span.set_attribute("invocation.status", record.status)
    if record.status in _ERRORS:
        span.set_status(Status(StatusCode.ERROR, _error(record)))
    span.end(ended_ns)


def _error(record: InvocationRecord) -> str:
    if record.failure is not None:
        return record.failure.message
    return record.pause_reason or record.last_error or record.status
