"""OpenTelemetry set-up that the SDK and the sidecar share: an exporter of spans over OTLP/HTTP,
made only where the standard ``OTEL_*`` variables name an endpoint.

Everything else is the OpenTelemetry SDK's reading of the same variables: ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES`` (the resource), ``OTEL_TRACES_SAMPLER`` (which traces are kept),
``OTEL_EXPORTER_OTLP_*`` (headers, timeout, compression), ``OTEL_BSP_*`` (batching).
"""

from __future__ import annotations

import logging
import os
import threading
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

from ._tracing_setup import ENDPOINT_VARIABLES, export_requested
from .otlp_json import JsonSpanExporter

log = logging.getLogger(__name__)

_OK = Status(StatusCode.OK)
#: How long a stopping process waits for its last spans to be sent.
SHUTDOWN_WAIT_S = 1.0


class Exporter:
    """Records spans whole, once they are over (``ReadableSpan``, straight to the processor: the
    batching one, but for benchmarks). The SDK's live spans, with their lock, sampler call and
    bounded attributes, cost three times as much to make, and every span here was decided
    (sampled or not) before it started."""

    def __init__(self, provider: TracerProvider, processor: SpanProcessor, scope: str) -> None:
        self.provider = provider
        self._processor = processor
        self._scope = InstrumentationScope(scope)
        self._flags = TraceFlags(TraceFlags.SAMPLED)

    def new_span_id(self) -> int:
        return self.provider.id_generator.generate_span_id()

    def record(self, name: str, trace_id: int, span_id: int, parent_span_id: int | None, *, kind: SpanKind,
               start_ns: int, end_ns: int, attributes: Attributes, error: str | None = None) -> None:
        """A sampled span, from ``start_ns`` to ``end_ns``, handed to the exporter's batch."""
        parent = None if parent_span_id is None else SpanContext(trace_id, parent_span_id, True, self._flags)
        status = _OK if error is None else Status(StatusCode.ERROR, error)
        self._processor.on_end(ReadableSpan(
            name=name, context=SpanContext(trace_id, span_id, False, self._flags), parent=parent,
            resource=self.provider.resource, attributes=attributes, kind=kind, status=status,
            start_time=start_ns, end_time=end_ns, instrumentation_scope=self._scope))

    def shutdown(self) -> None:
        """Export what is still in the batch; blocks, at most ``SHUTDOWN_WAIT_S``: the exporter
        retries a collector that is down for 10 s, and a stopping process must not wait that long."""
        flush = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        flush.start()
        flush.join(SHUTDOWN_WAIT_S)


def exporter(scope: str, default_service_name: str) -> Exporter | None:
    """An exporter of spans over OTLP/HTTP in batches, or None where tracing is off: no endpoint
    variable set, ``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``, or the exporter
    package (the ``otlp`` extra) not installed."""
    if not export_requested(os.environ):
        return None
    span_exporter = _span_exporter()
    if span_exporter is None:
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchSpanProcessor(span_exporter)
    provider.add_span_processor(processor)
    return Exporter(provider, processor, scope)


def _span_exporter() -> SpanExporter | None:
    """The exporter ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` asks for: ``http/protobuf`` (the
    default, with the ``otlp`` extra's package) or ``http/json`` (``otlp_json``: no extra needed,
    and a span costs a tenth of the encoding)."""
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol == "http/json":
        return JsonSpanExporter()
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL %r is not served here (http/protobuf or http/json): traces go as "
                    "http/protobuf", protocol)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("%s is set, but opentelemetry-exporter-otlp-proto-http is not installed "
                    "(the otlp extra: pip install 'durable-sidecar[otlp]', or 'durable-handler-sdk[otlp]' for a "
                    "handler service; or OTEL_EXPORTER_OTLP_PROTOCOL=http/json): no traces "
                    "are exported", ENDPOINT_VARIABLES[1])
        return None
    return OTLPSpanExporter()


def traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """The W3C ``traceparent`` header of a span."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
