"""OTLP/HTTP with JSON bodies: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` (or ``..._PROTOCOL``) ``http/json``.

The OTLP exporter package encodes spans as protobuf through generated message classes, 18-26 µs
a span, which is most of what tracing costs a busy sidecar. OTLP/HTTP also takes JSON (the OTLP
specification's JSON mapping: IDs in hex, 64-bit integers as decimal strings, enums as numbers),
which msgspec encodes from the Structs below in under a microsecond a span. The standard
variables keep their meaning: the endpoint (``..._TRACES_ENDPOINT`` as given, or
``..._ENDPOINT`` + ``/v1/traces``), ``..._HEADERS``, ``..._TIMEOUT`` (seconds) and
``..._COMPRESSION`` (``gzip``). Each batch is one POST from the batch processor's thread; a
failed one is logged and dropped, as a collector that is down must not hold spans without end.
"""

from __future__ import annotations

import gzip
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import msgspec
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.re import parse_env_headers

log = logging.getLogger(__name__)

_DEFAULT_ENDPOINT = "http://localhost:4318"


class AnyValue(msgspec.Struct, omit_defaults=True):
    stringValue: str | None = None
    boolValue: bool | None = None
    intValue: str | None = None
    doubleValue: float | None = None
    arrayValue: ArrayValue | None = None


class ArrayValue(msgspec.Struct):
    values: list[AnyValue]


class KeyValue(msgspec.Struct):
    key: str
    value: AnyValue


class Status(msgspec.Struct, omit_defaults=True):
    code: int = 0
    message: str = ""


class Span(msgspec.Struct, omit_defaults=True):
    traceId: str
    spanId: str
    name: str
    kind: int
    startTimeUnixNano: str
    endTimeUnixNano: str
    parentSpanId: str = ""
    attributes: list[KeyValue] = []
    status: Status | None = None


class Scope(msgspec.Struct):
    name: str


class ScopeSpans(msgspec.Struct):
    scope: Scope
    spans: list[Span]


class Resource(msgspec.Struct):
    attributes: list[KeyValue]


class ResourceSpans(msgspec.Struct):
    resource: Resource
    scopeSpans: list[ScopeSpans]


class ExportRequest(msgspec.Struct):
    resourceSpans: list[ResourceSpans]


_encoder = msgspec.json.Encoder()


def _value(value: object) -> AnyValue:
    if isinstance(value, bool):  # before int: a bool is an int
        return AnyValue(boolValue=value)
    if isinstance(value, int):
        return AnyValue(intValue=str(value))
    if isinstance(value, float):
        return AnyValue(doubleValue=value)
    if isinstance(value, list | tuple):
        return AnyValue(arrayValue=ArrayValue([_value(item) for item in value]))
    return AnyValue(stringValue=str(value))


def _attributes(attributes: Mapping[str, object] | None) -> list[KeyValue]:
    return [] if not attributes else [KeyValue(key, _value(value)) for key, value in attributes.items()]


def _span(span: ReadableSpan) -> Span:
    context = span.context
    assert context is not None and span.start_time is not None and span.end_time is not None
    return Span(
        traceId=f"{context.trace_id:032x}", spanId=f"{context.span_id:016x}",
        parentSpanId="" if span.parent is None else f"{span.parent.span_id:016x}",
        name=span.name, kind=span.kind.value + 1,  # OTLP counts from SPAN_KIND_UNSPECIFIED = 0
        startTimeUnixNano=str(span.start_time), endTimeUnixNano=str(span.end_time),
        attributes=_attributes(span.attributes),
        status=None if span.status.status_code.value == 0 else Status(span.status.status_code.value,
                                                                       span.status.description or ""))


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """One export request's body: the spans grouped by resource and scope, in their order."""
    groups: dict[tuple[int, str], tuple[Resource, list[Span]]] = {}
    for span in spans:
        scope = "" if span.instrumentation_scope is None else span.instrumentation_scope.name
        group = groups.get((id(span.resource), scope))
        if group is None:
            group = groups[(id(span.resource), scope)] = (Resource(_attributes(span.resource.attributes)), [])
        group[1].append(_span(span))
    return _encoder.encode(ExportRequest([
        ResourceSpans(resource, [ScopeSpans(Scope(scope), encoded)]) for (_, scope), (resource, encoded) in groups.items()]))


def _setting(name: str, default: str = "") -> str:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}") or default


def traces_endpoint() -> str:
    """Where the standard variables send traces."""
    signal = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if signal:
        return signal
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", _DEFAULT_ENDPOINT).rstrip("/") + "/v1/traces"


class JsonSpanExporter(SpanExporter):
    """Spans to an OTLP/HTTP endpoint as JSON, one POST per batch."""

    def __init__(self) -> None:
        self._endpoint = traces_endpoint()
        self._headers = {**parse_env_headers(_setting("HEADERS"), liberal=True), "content-type": "application/json"}
        self._timeout = float(_setting("TIMEOUT", "10"))
        self._gzip = _setting("COMPRESSION").strip().lower() == "gzip"
        if self._gzip:
            self._headers["content-encoding"] = "gzip"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = encode(spans)
        if self._gzip:
            body = gzip.compress(body, compresslevel=5)
        request = urllib.request.Request(self._endpoint, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("%d spans not exported to %s: %s", len(spans), self._endpoint, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
