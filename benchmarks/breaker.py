"""What a closed circuit breaker costs a step: ``Steps.run`` against ``Steps.guarded`` (the same
three steps, each naming a breaker), in alternating rounds on one sidecar.

    python -m benchmarks.breaker [--rounds 3] [--duration 5] [--concurrency 32] [--json out.json]

A step naming a breaker asks the sidecar's leave only while its connection holds no lease on
"closed": the first step on a connection asks once, every later one runs at once and reports its
outcome in a frame sent with its journal entry, unanswered. So the guarded scenario should match
the plain one; a round trip per step would cost it about a third of its throughput (each step
already waits for one acknowledgement). Durability ``none``: the disk is not what is compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp
import msgspec

from benchmarks import logic
from benchmarks.loadgen import LoadResult, run_load
from benchmarks.procs import (
    Procs, add_output_options, free_port, http_ok, leave_tmp, machine_info, run_cli, sidecar_executable, wait_until,
    write_json,
)

SCENARIOS = ("run", "guarded")


class Round(msgspec.Struct):
    scenario: str
    round: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float


class Report(msgspec.Struct):
    machine: dict[str, object]
    rounds: list[Round]
    #: Median guarded throughput over median plain throughput.
    ratio: float


async def _round(base: str, scenario: str, args: argparse.Namespace) -> LoadResult:
    return await run_load(f"{base}/Steps/{scenario}", body=b"7", concurrency=args.concurrency, keys=1,
                          duration=args.duration, warmup=args.warmup, expect=await logic.apply_steps(7))


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-breaker-"))
    procs = Procs(tmp)
    try:
        handler_port, ingress, admin = free_port(), free_port(), free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        async with aiohttp.ClientSession() as session:
            procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                     "--port", str(handler_port)])
            await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
            procs.start("sidecar", [
                *sidecar_executable(), "serve", "--data-dir", str(tmp / "data"), "--ingress", f"127.0.0.1:{ingress}",
                "--admin", f"127.0.0.1:{admin}", "--register", handler_url, "--durability", "none", "--workers", "1",
            ])
            base = f"http://127.0.0.1:{ingress}"
            await wait_until("Counter and Steps registered", http_ok(session, f"{base}/Counter/k0/get", method="POST"),
                             procs)
            rounds: list[Round] = []
            for number in range(1, args.rounds + 1):
                for scenario in SCENARIOS if number % 2 else reversed(SCENARIOS):
                    result = await _round(base, scenario, args)
                    if result.errors:
                        raise RuntimeError(f"Steps/{scenario}: {result.errors} errors: {result.error_kinds}")
                    rounds.append(Round(scenario, number, result.throughput_rps, result.p50_ms, result.p99_ms))
                    print(f"  round {number} {scenario:8s} {result.throughput_rps:8.1f} req/s  "
                          f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms", flush=True)
            procs.check_alive()
        median = {s: statistics.median(r.throughput_rps for r in rounds if r.scenario == s) for s in SCENARIOS}
        report = Report(machine_info(), rounds, round(median["guarded"] / median["run"], 3))
        print(f"median: run {median['run']:.1f} req/s, guarded {median['guarded']:.1f} req/s: "
              f"guarded/run = {report.ratio}")
        write_json(args.json, report)
        return 0
    finally:
        procs.close()
        leave_tmp(tmp, args.keep)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.breaker", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of both scenarios, alternating which goes first")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per scenario and round")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    add_output_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
