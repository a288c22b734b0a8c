"""Spans as OTLP/HTTP JSON (``http/json``), read back through the OTLP protobuf schema."""

from __future__ import annotations

from hypothesis import given, strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from handler_sdk.otlp_json import encode
from tests.e2e.otlp_collector import decode

#: One resource, as a process's spans share its provider's.
_RESOURCE = Resource({"service.name": "sidecar"})
_scalars = st.one_of(st.text(max_size=20), st.booleans(), st.integers(-2**63, 2**63 - 1),
                     st.floats(allow_nan=False, allow_infinity=False))


def _span(name: str, attributes: dict[str, object], *, parent: int | None, error: str | None,
          kind: SpanKind) -> ReadableSpan:
    flags = TraceFlags(TraceFlags.SAMPLED)
    return ReadableSpan(
        name=name, context=SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, flags),
        parent=None if parent is None else SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, parent, True, flags),
        resource=_RESOURCE, attributes=attributes,  # type: ignore[arg-type]
        kind=kind, status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.OK),
        start_time=1_764_790_000_123_000_001, end_time=1_764_790_000_124_000_002,
        instrumentation_scope=InstrumentationScope("sidecar"))


@given(attributes=st.dictionaries(st.text(min_size=1, max_size=10), _scalars, max_size=6),
       parent=st.none() | st.integers(1, 2**64 - 1), error=st.none() | st.text(min_size=1, max_size=30),
       kind=st.sampled_from(list(SpanKind)))
def test_a_span_reads_back_as_it_was(attributes: dict[str, object], parent: int | None, error: str | None,
                                     kind: SpanKind) -> None:
    [span] = decode(encode([_span("attempt Counter/add", attributes, parent=parent, error=error, kind=kind)]),
                    as_json=True)
    assert (span["service"], span["scope"], span["name"]) == ("sidecar", "sidecar", "attempt Counter/add")
    assert (span["trace_id"], span["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert span["parent_span_id"] == (None if parent is None else f"{parent:016x}")
    assert (span["start_ns"], span["end_ns"]) == (1_764_790_000_123_000_001, 1_764_790_000_124_000_002)
    assert span["kind"] == kind.value + 1
    assert (span["status_code"], span["status_message"]) == ((2, error) if error else (1, ""))
    assert span["attributes"] == attributes


def test_spans_of_one_resource_and_scope_go_together() -> None:
    spans = [_span(f"step s{n}", {"step.index": n}, parent=None, error=None, kind=SpanKind.INTERNAL)
             for n in range(3)]
    body = encode(spans)
    assert body.count(b'"resourceSpans"') == 1 and body.count(b'"scope"') == 1
    assert [span["name"] for span in decode(body, as_json=True)] == ["step s0", "step s1", "step s2"]
