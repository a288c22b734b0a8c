"""What tracing costs: the sidecar's scenarios with tracing off, on (every trace exported to a
collector; ``on-json`` the same as OTLP/HTTP JSON), on with one trace in ten sampled, on with every
trace sampled out, and on with a webhook delivered for each invocation too (``on+webhooks``),
alternating in one run.

    python -m benchmarks.tracing [--modes off,on,on-json,on-10%,on-0%,on+webhooks] [--rounds 3] [--scenarios counter,steps]
                                 [--duration 10] [--json out.json]
    python -m benchmarks.tracing --parts      # what each part of a span costs, in this process

The collector (``tests/e2e/otlp_collector.py --discard``) takes each export and answers at once
without decoding it, so what is measured is the sidecar's and the SDK's side: building spans,
batching them (``BatchSpanProcessor``, its worker thread) and encoding and sending each batch. Its
own CPU is reported apart. Takes the options of ``benchmarks.run``; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.procs import Procs, cpu_seconds, free_port, http_ok, leave_tmp, machine_info, wait_until, write_json
from benchmarks.run import Record, bench_sidecar, parse_args
from handler_sdk._tracing import StepTracer
from handler_sdk.otel import Exporter
from handler_sdk.otlp_json import encode as encode_json
from handler_sdk.protocol import Input, Run, Start
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sidecar.store import InvocationRecord
from sidecar.tracing import Tracing

#: Tracing off; on, every trace kept; the same sent as OTLP/HTTP JSON; on, the sampler keeping one
#: in ten; on, keeping none; on, every trace kept, with a webhook per invocation to a receiver
#: answering 204 (``run --webhooks``).
MODES = ("off", "on", "on-json", "on-10%", "on-0%", "on+webhooks")
_SAMPLERS = {"on-10%": ("parentbased_traceidratio", "0.1"), "on-0%": ("always_off", "")}


class Collected(msgspec.Struct):
    exports: int
    bytes: int


class ModeRecord(msgspec.Struct, kw_only=True):
    mode: str
    record: Record
    #: What the collector received over the whole phase (warm-up included) and the CPU it spent;
    #: None with tracing off.
    collected: Collected | None = None
    collector_cpu_s: float | None = None


def _environment(mode: str, collector: str) -> dict[str, str]:
    if mode == "off":
        return {}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector}
    if mode == "on-json":
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
    if mode in _SAMPLERS:
        env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"] = _SAMPLERS[mode]
    return env


async def bench_mode(mode: str, args: argparse.Namespace, log_dir: Path,
                     session: aiohttp.ClientSession) -> list[ModeRecord]:
    log_dir.mkdir(parents=True)
    collector = Procs(log_dir)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        collector.start("collector", [sys.executable, "-m", "tests.e2e.otlp_collector", "--port", str(port),
                                      "--discard"])
        await wait_until("collector", http_ok(session, f"{url}/requests"), collector)
        before = cpu_seconds(collector.procs[0].pid)
        phase = argparse.Namespace(**{**vars(args), "webhooks": args.webhooks or mode == "on+webhooks"})
        records = await bench_sidecar(phase, log_dir, session, _environment(mode, url))
        async with session.get(f"{url}/requests") as response:
            collected = msgspec.convert(await response.json(), Collected)
        spent = round(cpu_seconds(collector.procs[0].pid) - before, 2)
    finally:
        collector.close()
    return [ModeRecord(mode=mode, record=r, collected=None if mode == "off" else collected,
                       collector_cpu_s=None if mode == "off" else spent) for r in records]


def median(records: list[ModeRecord]) -> ModeRecord:
    return sorted(records, key=lambda m: m.record.throughput_rps)[(len(records) - 1) // 2]


def print_table(results: list[ModeRecord]) -> None:
    print(f"\n{'scenario':9s} {'tracing':12s} {'req/s':>8s} {'vs off':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'CPU us/req':>10s} {'vs off':>7s} {'exports':>8s} {'KiB sent':>9s}")
    scenarios = dict.fromkeys(m.record.scenario for m in results)
    for scenario in scenarios:
        by_mode = {mode: median([m for m in results if m.record.scenario == scenario and m.mode == mode])
                   for mode in MODES if any(m.mode == mode and m.record.scenario == scenario for m in results)}
        off = by_mode.get("off")
        for mode, m in by_mode.items():
            r = m.record
            ratio = f"{r.throughput_rps / off.record.throughput_rps:.3f}" if off and off.record.throughput_rps else "-"
            cpu = f"{r.cpu_us_per_request / off.record.cpu_us_per_request:.3f}" if off and off.record.cpu_us_per_request \
                else "-"
            exports = "-" if m.collected is None else str(m.collected.exports)
            sent = "-" if m.collected is None else f"{m.collected.bytes / 1024:.0f}"
            print(f"{scenario:9s} {mode:12s} {r.throughput_rps:8.0f} {ratio:>7s} {r.p50_ms:7.2f} {r.p99_ms:7.2f} "
                  f"{r.cpu_us_per_request:10.1f} {cpu:>7s} {exports:>8s} {sent:>9s}")


async def amain(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-tracing-"))
    print(f"python -m benchmarks.tracing {' '.join(sys.argv[1:])}\nlogs: {tmp}", flush=True)
    results: list[ModeRecord] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for number in range(1, args.rounds + 1):
            for mode in args.modes:
                print(f"round {number}, tracing {mode}", flush=True)
                for m in await bench_mode(mode, args, tmp / f"round-{number}-{mode}", session):
                    m.record.round = number
                    results.append(m)
    machine = machine_info()
    print(f"\nmachine: {machine['cores']} cores, {machine['cpu_model']}, git {machine['git']}")
    print_table(results)
    write_json(args.json, {"machine": machine, "results": results})
    if any(m.record.verification is not None and not m.record.verification.ok for m in results):
        print(f"a counter check failed: logs kept in {tmp}")
        return 1
    leave_tmp(tmp, args.keep)
    return 0


def _timed(fn: Callable[[], object], n: int = 20_000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - started) / n * 1e6, 2)


def parts() -> dict[str, float]:
    """Microseconds per call of what tracing does for a Counter.add, in this process: choosing an
    invocation's IDs, making a span (the attempt's costs what the invocation's does) and handing
    it to a processor, then the OTLP exporter's encoding per span, over the spans made, and the
    ``http/json`` encoding of the same spans."""
    memory = InMemorySpanExporter()
    export = Exporter(TracerProvider(), SimpleSpanProcessor(memory), "bench")
    tracing = Tracing(export)
    ids = tracing.accepted({})
    record = InvocationRecord(id="inv_01M8BNHF3WBNXP0NMF1614JHPA", service="Counter", handler="add", key="k1",
                              handler_kind="exclusive", status="completed", deployment_id="dp_1", created_ms=1,
                              modified_ms=1, trace=ids)
    start = Start("inv_1", attempt=1, service="Counter", handler="add", key="k1", input=b"1", headers={},
                  journal=[Input(b"1")], state=None, seed=0,
                  trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    steps = StepTracer(export).attempt(start)
    assert ids is not None and steps is not None
    entry = Run(name="audit", value=b"1")
    traceparent = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    costs = {
        "accept, no traceparent": _timed(lambda: tracing.accepted({})),
        "accept, with a traceparent": _timed(lambda: tracing.accepted(traceparent)),
        "invocation span": _timed(lambda: tracing.finished(record)),
        "step span (SDK)": _timed(lambda: steps.end(0, 1, entry)),
    }
    queued = memory.get_finished_spans()[:4096]
    started = time.perf_counter()
    encode_spans(queued).SerializePartialToString()
    costs["encode, per span"] = round((time.perf_counter() - started) / len(queued) * 1e6, 2)
    started = time.perf_counter()
    encode_json(queued)
    costs["encode as JSON, per span"] = round((time.perf_counter() - started) / len(queued) * 1e6, 2)
    return costs


def main(argv: list[str] | None = None) -> int:
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--modes", default=",".join(MODES), help=f"a comma-separated subset of {','.join(MODES)}")
    ours.add_argument("--parts", action="store_true", help="time each part of a span in this process, and stop")
    known, rest = ours.parse_known_args(sys.argv[1:] if argv is None else argv)
    if known.parts:
        for part, us in parts().items():
            print(f"{part:28s} {us:7.2f} us")
        return 0
    if "--scenarios" not in rest:
        rest += ["--scenarios", "counter,steps"]
    args = parse_args(rest)  # the others are benchmarks.run's
    args.modes = [m for m in known.modes.split(",") if m]
    if not args.modes or set(args.modes) - set(MODES):
        ours.error(f"--modes takes a comma-separated subset of {','.join(MODES)}")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
