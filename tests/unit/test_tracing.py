"""Tracing's decisions: when it is on, how an invocation's trace IDs are chosen, and the wire and
storage fields it adds, read by peers that predate them."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from handler_sdk.otel import exporter
from handler_sdk.protocol import Input, Start, encoder, to_handler_decoder
from sidecar.store import InvocationRecord
from sidecar.store.records import TraceIds
from sidecar.tracing import Tracing

TRACE, CALLER = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
                 "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)


def test_export_is_on_only_where_an_endpoint_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exporter("x", "sidecar") is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
    on = exporter("x", "sidecar")
    assert on is not None and on.provider.resource.attributes["service.name"] == "sidecar"
    on.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    named = exporter("x", "sidecar")
    assert named is not None and named.provider.resource.attributes["service.name"] == "billing"
    named.shutdown()
    for name, value in (("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            assert exporter("x", "sidecar") is None, name


def test_tracing_off_chooses_no_ids() -> None:
    assert Tracing(None).accepted({"traceparent": f"00-{TRACE}-{CALLER}-01"}) is None


@pytest.fixture
def tracing(monkeypatch: pytest.MonkeyPatch) -> Tracing:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    return Tracing.from_environment()


def test_an_invocation_continues_the_callers_traceparent(tracing: Tracing) -> None:
    ids = tracing.accepted({"traceparent": f"00-{TRACE}-{CALLER}-01"})
    assert ids is not None
    assert (ids.trace_id, ids.parent_span_id, ids.sampled) == (TRACE, CALLER, True)
    assert len(ids.span_id) == 16 and ids.span_id != CALLER
    # A caller that sampled its trace out is followed (the default sampler is parent-based).
    dropped = tracing.accepted({"traceparent": f"00-{TRACE}-{CALLER}-00"})
    assert dropped is not None and not dropped.sampled


def test_without_a_valid_traceparent_an_invocation_starts_a_trace(tracing: Tracing) -> None:
    for headers in ({}, {"traceparent": "00-not-a-trace-01"}, {"traceparent": f"00-{'0' * 32}-{CALLER}-01"}):
        ids = tracing.accepted(headers)
        assert ids is not None and ids.parent_span_id is None and ids.sampled, headers
        assert len(ids.trace_id) == 32 and ids.trace_id != "0" * 32


def test_a_child_invocation_is_under_its_callers_span(tracing: Tracing) -> None:
    caller = TraceIds(trace_id=TRACE, span_id=CALLER, sampled=True)
    child = tracing.accepted({"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}, caller)
    assert child is not None and (child.trace_id, child.parent_span_id) == (TRACE, CALLER)


def test_the_sampler_decides_once_at_acceptance(tracing: Tracing, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    ids = Tracing.from_environment().accepted({})
    assert ids is not None and not ids.sampled


def test_records_and_starts_without_trace_fields_still_decode() -> None:
    record = InvocationRecord(id="inv_1", service="S", handler="h", handler_kind="shared", status="pending",
                              deployment_id="dp_1", created_ms=1, modified_ms=1)
    encoded = msgspec.msgpack.encode(record)
    assert b"trace" not in encoded  # left out while unset: what an older sidecar wrote
    assert msgspec.msgpack.decode(encoded, type=InvocationRecord).trace is None
    traced = msgspec.structs.replace(record, trace=TraceIds(trace_id=TRACE, span_id=CALLER))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(traced), type=InvocationRecord) == traced

    start = Start("inv_1", attempt=1, service="S", handler="h", key=None, input=b"", headers={},
                  journal=[Input(b"")], state=None, seed=0)
    assert b"trace" not in encoder.encode(start)
    assert to_handler_decoder.decode(encoder.encode(start)) == start


@given(value=st.text(max_size=120) | st.from_regex(r"[0-9a-f]{2}-[0-9a-fA-F]{32}-[0-9a-fA-F]{16}-[0-9a-f]{2}",
                                                     fullmatch=True))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_traceparent_a_client_sends_gives_an_invocation_its_ids(tracing: Tracing, value: str) -> None:
    ids = tracing.accepted({"traceparent": value})
    assert ids is not None and len(ids.trace_id) == 32 and int(ids.trace_id, 16) != 0
    assert ids.parent_span_id is None or len(ids.parent_span_id) == 16
