"""Tracing end to end: the sidecar and the handler service export to a collector that decodes what
it receives (tests/e2e/otlp_collector.py), through the standard OTEL_* variables."""

from __future__ import annotations

import secrets
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import START_TIMEOUT_S, Cluster, running_cluster
from tests.procs import Process, eventually, free_port, python

HANDLERS = "tests.e2e.traced:SERVICES"
STEPS = {"first", "flaky", "doomed", "gated"}
#: OTLP status codes.
OK, ERROR = 1, 2


class Collector:
    def __init__(self, http: aiohttp.ClientSession, tmp: Path, port: int) -> None:
        self.http = http
        self.url = f"http://127.0.0.1:{port}"
        self.process = Process("collector", python("-m", "tests.e2e.otlp_collector", "--port", str(port)), tmp)

    async def spans(self, trace_id: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/spans") as response:
            return [span for span in await response.json() if span["trace_id"] == trace_id]

    async def serving(self) -> bool:
        await self.exports()
        return True

    async def exports(self) -> int:
        async with self.http.get(f"{self.url}/requests") as response:
            return int((await response.json())["exports"])


@asynccontextmanager
async def _collector(http: aiohttp.ClientSession, tmp: Path, port: int) -> AsyncIterator[Collector]:
    collector = Collector(http, tmp, port)
    collector.process.start()
    try:
        await eventually(collector.serving, timeout=START_TIMEOUT_S, what="the collector")
        yield collector
    finally:
        collector.process.stop()


@pytest.fixture(params=["http/protobuf", "http/json"], ids=["protobuf", "json"])
async def collector(tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
                    request: pytest.FixtureRequest) -> AsyncIterator[Collector]:
    """A collector, and every process started after it told to export there, in 50 ms batches,
    in each OTLP/HTTP encoding (``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
    async with _collector(http, tmp_path, free_port()) as running:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", request.param)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
        yield running


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _one(spans: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    found = [span for span in spans if span["name"].startswith(prefix)]
    assert len(found) == 1, (prefix, spans)
    return found[0]


def _steps(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The step spans by step name, each asserted to be the only one of its name."""
    steps = [span for span in spans if span["name"].startswith("step ")]
    counts = Counter(span["attributes"]["step.name"] for span in steps)
    assert all(count == 1 for count in counts.values()), counts
    return {span["attributes"]["step.name"]: span for span in steps}


async def _spans_arrived(collector: Collector, trace_id: str, *prefixes: str) -> list[dict[str, Any]]:
    async def arrived() -> list[dict[str, Any]]:
        spans = await collector.spans(trace_id)
        names = {span["name"] for span in spans}
        return spans if all(any(name.startswith(p) for name in names) for p in prefixes) else []
    return await eventually(arrived, timeout=30, what=f"spans {prefixes}")


async def test_a_call_with_a_traceparent_is_one_trace_of_invocation_attempt_and_step_spans(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, collector: Collector,
) -> None:
    trace_id, caller, traceparent = _traceparent()
    gate = tmp_path / "gate"
    gate.touch()
    flags = ["--durability", "none", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS) as cluster:
        status, body, headers = await cluster.post("/Traced/journey", str(gate), headers={"traceparent": traceparent})
        assert (status, body["sum"]) == (200, 6)
        spans = await _spans_arrived(collector, trace_id, "invocation", "attempt", *(f"step {s}" for s in STEPS))
        _, shown = await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True)
        assert shown["trace_id"] == trace_id  # where an operator finds it

    invocation = _one(spans, "invocation Traced/journey")
    assert invocation["parent_span_id"] == caller
    assert invocation["service"] == "sidecar" and invocation["status_code"] == OK
    assert invocation["attributes"] == {
        "invocation.id": headers["x-restate-id"], "invocation.target": "Traced/journey",
        "invocation.status": "completed", "invocation.attempts": 1}
    attempt = _one(spans, "attempt Traced/journey")
    assert attempt["parent_span_id"] == invocation["span_id"]
    assert attempt["attributes"]["attempt.number"] == 1
    assert attempt["attributes"]["invocation.status"] == "completed"
    assert invocation["start_ns"] <= attempt["start_ns"] <= attempt["end_ns"] <= invocation["end_ns"]

    steps = _steps(spans)
    assert set(steps) == STEPS
    for step in steps.values():
        assert step["service"] == "handler-service" and step["parent_span_id"] == attempt["span_id"]
        assert attempt["start_ns"] <= step["start_ns"] <= step["end_ns"] <= attempt["end_ns"]
    assert steps["first"]["attributes"]["step.attempts"] == 1
    flaky = steps["flaky"]["attributes"]
    assert (flaky["step.attempts"], flaky["step.cost"], flaky["step.variant"]) == (2, 0.25, "primary")
    doomed = steps["doomed"]
    assert (doomed["status_code"], doomed["attributes"]["step.error"]) == (ERROR, "no such thing")

    # Handler code saw the attempt's span as its parent: its own spans join the same trace.
    assert body["traceparent"] == f"00-{trace_id}-{attempt['span_id']}-01"


async def test_a_call_between_handlers_continues_the_callers_trace(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, collector: Collector,
) -> None:
    trace_id, caller, traceparent = _traceparent()
    async with running_cluster(tmp_path, http, request, ["--durability", "none"], handlers=HANDLERS) as cluster:
        assert (await cluster.post("/Traced/relay", 1, headers={"traceparent": traceparent}))[:2] == (200, 2)
        spans = await _spans_arrived(collector, trace_id, "invocation Traced/relay", "invocation Traced/leaf",
                                     "step leaf-step")
    relay = _one(spans, "invocation Traced/relay")
    leaf = _one(spans, "invocation Traced/leaf")
    assert relay["parent_span_id"] == caller and leaf["parent_span_id"] == relay["span_id"]
    leaf_attempt = _one(spans, "attempt Traced/leaf")
    assert leaf_attempt["parent_span_id"] == leaf["span_id"]
    assert _one(spans, "step leaf-step")["parent_span_id"] == leaf_attempt["span_id"]


async def test_a_handler_killed_mid_workflow_and_replayed_leaves_one_span_per_step(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, collector: Collector,
) -> None:
    trace_id, caller, traceparent = _traceparent()
    gate = tmp_path / "gate"
    flags = ["--durability", "none", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS) as cluster:
        status, body, _ = await cluster.post("/Traced/journey/send", str(gate), headers={"traceparent": traceparent})
        assert status == 202
        await _spans_arrived(collector, trace_id, "step first", "step flaky", "step doomed")
        cluster.handlers.kill()  # while "gated" runs
        gate.touch()
        await cluster.restart_handlers()
        status, result = await cluster.get(f"/restate/invocation/{body['invocationId']}/attach")
        assert (status, result["sum"]) == (200, 6)
        await _spans_arrived(collector, trace_id, "invocation", "step gated")
        cluster.stop()  # each process exports what it holds before it exits

    spans = await collector.spans(trace_id)
    invocation = _one(spans, "invocation")
    assert invocation["parent_span_id"] == caller
    attempts = sorted((span for span in spans if span["name"].startswith("attempt")),
                      key=lambda span: span["attributes"]["attempt.number"])
    assert len(attempts) == invocation["attributes"]["invocation.attempts"] >= 2
    assert all(attempt["parent_span_id"] == invocation["span_id"] for attempt in attempts)
    assert attempts[0]["status_code"] == ERROR  # its link was lost
    steps = _steps(spans)
    assert set(steps) == STEPS
    assert {steps[name]["parent_span_id"] for name in ("first", "flaky", "doomed")} == {attempts[0]["span_id"]}
    assert steps["gated"]["parent_span_id"] == attempts[-1]["span_id"]


async def test_an_invocation_across_a_sidecar_kill_has_one_span_from_its_acceptance(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, collector: Collector,
) -> None:
    trace_id, caller, traceparent = _traceparent()
    gate = tmp_path / "gate"
    flags = ["--durability", "none", "--workers", "1"]
    async with running_cluster(tmp_path, http, request, flags, handlers=HANDLERS) as cluster:
        status, body, _ = await cluster.post("/Traced/journey/send", str(gate), headers={"traceparent": traceparent})
        assert status == 202
        invocation_id = body["invocationId"]
        await _spans_arrived(collector, trace_id, "step first", "step flaky", "step doomed")
        cluster.sidecar.kill()  # while "gated" runs: the attempt's span is never ended
        await cluster.start_sidecar()
        # Only now may "gated" finish. Its first run was stopped when the handler service lost its
        # socket, which the kernel closed as the sidecar died, well before a new one served (and
        # the next attempt's Start would stop it too): the step finishes only in the next attempt.
        gate.touch()
        status, result = await cluster.get(f"/restate/invocation/{invocation_id}/attach")
        assert (status, result["sum"]) == (200, 6)
        cluster.stop()

    spans = await collector.spans(trace_id)
    invocation = _one(spans, "invocation")
    assert invocation["parent_span_id"] == caller
    attempt = _one(spans, "attempt")  # the first one died with its sidecar
    assert attempt["parent_span_id"] == invocation["span_id"]
    assert attempt["attributes"]["attempt.number"] == invocation["attributes"]["invocation.attempts"]
    steps = _steps(spans)
    assert set(steps) == STEPS
    assert steps["gated"]["parent_span_id"] == attempt["span_id"]
    assert invocation["start_ns"] <= steps["first"]["start_ns"] and steps["gated"]["end_ns"] <= invocation["end_ns"]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_without_an_endpoint_variable_nothing_is_traced_or_sent(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The collector listens where an exporter sends by default (localhost:4318); the other OTEL_*
    variables are set, the endpoint ones not."""
    if not _port_free(4318):
        pytest.skip("port 4318 (OTLP/HTTP's default) is taken on this machine")
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "untraced")
    _, _, traceparent = _traceparent()
    gate = tmp_path / "gate"
    gate.touch()
    async with _collector(http, tmp_path, 4318) as collector:
        async with running_cluster(tmp_path, http, request, ["--durability", "none"], handlers=HANDLERS) as cluster:
            status, body, _ = await cluster.post("/Traced/journey", str(gate), headers={"traceparent": traceparent})
            assert (status, body["sum"]) == (200, 6)
            # No attempt span was made: handler code sees the caller's own traceparent.
            assert body["traceparent"] == traceparent
            cluster.stop()  # a process that traced would export what it holds before it exits
        assert await collector.exports() == 0
