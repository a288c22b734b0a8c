"""OpenTelemetry spans for invocations and their attempts (docs/operations.md#tracing).

Tracing is on where the standard ``OTEL_*`` variables name an OTLP endpoint (``handler_sdk.otel``);
off, every method returns at its first line and no span is built.

The sampler decides once per invocation, when it is accepted, and the decision and the span's IDs
are stored in its record (``TraceIds``). So every attempt, in this process or after a restart, is
a child of the same invocation span, and that span is recorded once, when the invocation's end is
durable, from the record's ``created_ms``: a crash before the end leaves no half span behind. An
attempt's span runs from its ``Start`` to the attempt's end; its ``traceparent`` goes to the
handler in ``Start.trace``, and the SDK's step spans are its children.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from handler_sdk.otel import Exporter, exporter, traceparent

from .store.records import InvocationRecord, TraceIds

if TYPE_CHECKING:  # the invoker imports this module
    from .invoker.live import Attempt, Live

_W3C = TraceContextTextMapPropagator()
_ERRORS = frozenset({"failed", "killed", "cancelled", "backing-off", "paused"})


def _target(record: InvocationRecord) -> str:
    return f"{record.service}/{record.key}/{record.handler}" if record.key is not None \
        else f"{record.service}/{record.handler}"


class Tracing:
    """The spans of one worker's invocations; ``Tracing(None)`` makes none."""

    def __init__(self, export: Exporter | None) -> None:
        self._export = export

    @classmethod
    def from_environment(cls) -> Tracing:
        return cls(exporter("sidecar", "sidecar"))

    def accepted(self, headers: Mapping[str, str], caller: TraceIds | None = None) -> TraceIds | None:
        """The IDs of a new invocation's span, and the sampler's decision for all of it: under its
        ``caller``'s invocation span (a call or send from a handler), else continuing the
        request's ``traceparent`` if it has one."""
        if self._export is None:
            return None
        if caller is not None:
            parent = SpanContext(int(caller.trace_id, 16), int(caller.span_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED if caller.sampled else TraceFlags.DEFAULT))
        elif "traceparent" in headers:
            parent = trace.get_current_span(_W3C.extract(headers)).get_span_context()
        else:
            parent = INVALID_SPAN_CONTEXT
        incoming = trace.set_span_in_context(NonRecordingSpan(parent)) if parent.is_valid else None
        provider = self._export.provider
        trace_id = parent.trace_id if parent.is_valid else provider.id_generator.generate_trace_id()
        decision = provider.sampler.should_sample(incoming, trace_id, "invocation", SpanKind.SERVER)
        return TraceIds(trace_id=f"{trace_id:032x}", span_id=f"{self._export.new_span_id():016x}",
                        parent_span_id=f"{parent.span_id:016x}" if parent.is_valid else None,
                        sampled=decision.decision is Decision.RECORD_AND_SAMPLE)

    def attempt(self, live: Live, attempt: Attempt) -> dict[str, str] | None:
        """Open ``attempt``'s span (recorded once it is over); the trace context for its handler."""
        if self._export is None:
            return None
        ids = live.record.trace
        if ids is None:  # accepted while tracing was off
            return None
        trace_id = int(ids.trace_id, 16)
        if not ids.sampled:  # the handler's spans follow the decision; none is made here
            return {"traceparent": traceparent(trace_id, int(ids.span_id, 16), False)}
        span_id = self._export.new_span_id()
        attempt.when_over(partial(_detached, self._export, live, ids, span_id, time.time_ns()))
        return {"traceparent": traceparent(trace_id, span_id, True)}

    def finished(self, record: InvocationRecord) -> None:
        """``record``'s end is durable: its span, from its acceptance (as its record says, whichever
        process accepted it) to now, is recorded."""
        if self._export is None:
            return
        ids = record.trace
        if ids is None or not ids.sampled:
            return
        self._export.record(
            f"invocation {record.service}/{record.handler}", int(ids.trace_id, 16), int(ids.span_id, 16),
            None if ids.parent_span_id is None else int(ids.parent_span_id, 16), kind=SpanKind.SERVER,
            start_ns=record.created_ms * 1_000_000, end_ns=time.time_ns(),
            attributes={"invocation.id": record.id, "invocation.target": _target(record),
                        "invocation.status": record.status, "invocation.attempts": record.attempts},
            error=_error(record) if record.status in _ERRORS else None)

    def shutdown(self) -> None:
        """Export what is pending; blocks (``Exporter.shutdown``)."""
        if self._export is not None:
            self._export.shutdown()


def _detached(export: Exporter, live: Live, ids: TraceIds, span_id: int, started_ns: int) -> None:
    """The attempt is over: its span ends now, and is recorded on the next turn of the event loop,
    once whoever detached it has set the status that follows, which says how it went."""
    asyncio.get_running_loop().call_soon(_attempt_span, export, live, ids, span_id, started_ns, time.time_ns())


def _attempt_span(export: Exporter, live: Live, ids: TraceIds, span_id: int, started_ns: int, ended_ns: int) -> None:
    record = live.record
    export.record(
        f"attempt {record.service}/{record.handler}", int(ids.trace_id, 16), span_id, int(ids.span_id, 16),
        kind=SpanKind.CLIENT, start_ns=started_ns, end_ns=ended_ns,
        attributes={"attempt.number": record.attempts, "invocation.status": record.status},
        error=_error(record) if record.status in _ERRORS else None)


def _error(record: InvocationRecord) -> str:
    if record.failure is not None:
        return record.failure.message
    return record.pause_reason or record.last_error or record.status
