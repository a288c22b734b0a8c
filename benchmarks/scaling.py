"""Does ``sidecar serve --workers N`` use more cores? Counter.add over many keys at N=1 and N=4.

    python -m benchmarks.scaling [--workers 1,4] [--handlers 4] [--loadgens 4] [--concurrency 128]
                                 [--keys 1000] [--duration 10] [--durability fsync] [--json out.json]

For each N in ``--workers``, on a fresh data dir: ``--handlers`` copies of the handler service share
one port (``python -m handler_sdk ... --reuse-port``) so that the handlers are not what limits the
sidecar, and ``--loadgens`` load-generator processes (``benchmarks.loadgen``), each on its own range
of keys, share ``--concurrency`` clients, so that neither is the load generator. Each worker
keeps two links per handler process (``SIDECAR_CONNECTIONS_PER_DEPLOYMENT``). Throughput is the
sum over the load generators; a percentile is the worst of theirs (they cannot be merged exactly).
Every run reads a sample of counters back and checks them against the successful adds.

The target (issue: use every core) is N=4 at 3x or more of N=1 on a machine with 8 or more cores.
On fewer cores the processes share them and the run says so. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.loadgen import LoadResult
from benchmarks.procs import BenchError, Procs, busy_warning, free_port, http_ok, leave_tmp, machine_info, \
    run_cli, sidecar_executable, wait_until, write_json
from benchmarks.run import Scenario, Verification, services_listed, verify_counter

#: the scaling target: N=4 serves at least this many times what N=1 does, on 8 or more cores
TARGET_RATIO = 3.0
TARGET_CORES = 8


class Run(msgspec.Struct, kw_only=True):
    workers: int
    throughput_rps: float
    requests: int
    errors: int
    p50_ms: float  # the worst of the load generators'
    p99_ms: float
    cpu_s: dict[str, float]  # per process (a sidecar's workers and writer count as "sidecar")
    verification: list[Verification]


class Report(msgspec.Struct, kw_only=True):
    command: str
    machine: dict[str, object]
    settings: dict[str, object]
    runs: list[Run]
    #: throughput of the largest N over that of the smallest
    ratio: float | None


async def run_workers(workers: int, args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession) -> Run:
    procs = Procs(log_dir / f"workers-{workers}")
    procs.log_dir.mkdir()
    procs.env["SIDECAR_CONNECTIONS_PER_DEPLOYMENT"] = str(2 * args.handlers)
    try:
        handler_port, ingress, admin = free_port(), free_port(), free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        for i in range(args.handlers):
            procs.start(f"handlers-{i}", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                          "--port", str(handler_port), "--reuse-port"])
        await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
        procs.start("sidecar", [
            *sidecar_executable(), "serve", "--data-dir", str(procs.log_dir / "data"),
            "--ingress", f"127.0.0.1:{ingress}", "--admin", f"127.0.0.1:{admin}", "--register", handler_url,
            "--durability", args.durability, "--workers", str(workers),
        ])
        admin_url, base = f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{ingress}"
        await wait_until("sidecar admin /health", http_ok(session, f"{admin_url}/health"), procs)
        await wait_until("Counter in GET /services", services_listed(session, f"{admin_url}/services", {"Counter"}),
                         procs)
        await wait_until("sidecar ingress /restate/health", http_ok(session, f"{base}/restate/health"), procs)
        print(f"  --workers {workers}: {args.loadgens} load generators, {args.handlers} handler processes ...",
              flush=True)
        cpu_before = procs.cpu()
        scenarios = [Scenario(f"counter-{i}", f"/Counter/g{i}-{{key}}/add", n=1, verify_counter=True)
                     for i in range(args.loadgens)]
        results = await asyncio.gather(*(_load(base + s.path, args, args.concurrency // args.loadgens)
                                         for s in scenarios))
        cpu_after = procs.cpu()
        procs.check_alive()
        verification = [await verify_counter(session, base, s, r, args.verify_keys // args.loadgens or 1)
                        for s, r in zip(scenarios, results)]
        cpu: dict[str, float] = {}
        for name, seconds in cpu_after.items():
            group = name.partition("-")[0]  # the handler processes as one
            cpu[group] = round(cpu.get(group, 0.0) + seconds - cpu_before.get(name, 0.0), 2)
        run = Run(
            workers=workers, throughput_rps=round(sum(r.throughput_rps for r in results), 1),
            requests=sum(r.requests for r in results), errors=sum(r.errors for r in results),
            p50_ms=max(r.p50_ms for r in results), p99_ms=max(r.p99_ms for r in results),
            cpu_s=cpu, verification=verification,
        )
        print(f"    {run.throughput_rps:,.0f} req/s, {run.errors} errors, p50 <= {run.p50_ms:.2f} ms, "
              f"p99 <= {run.p99_ms:.2f} ms", flush=True)
        return run
    finally:
        procs.close()


async def _load(url_template: str, args: argparse.Namespace, concurrency: int) -> LoadResult:
    """One load-generator process (its own core, where there are enough), its result as JSON."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.loadgen", "--url-template", url_template, "--body", "1",
        "--concurrency", str(max(1, concurrency)), "--keys", str(max(1, args.keys // args.loadgens)),
        "--duration", str(args.duration), "--warmup", str(args.warmup), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    try:
        return msgspec.json.decode(out, type=LoadResult)
    except msgspec.DecodeError:
        raise BenchError(f"load generator failed (exit {process.returncode}): {err.decode(errors='replace')[-2000:]}") \
            from None


def print_report(report: Report) -> None:
    m = report.machine
    print(f"\nmachine: {m['cores']} cores, {m['cpu_model']}, load average at start {m['loadavg_at_start']}")
    print(f"{'workers':>7}  {'req/s':>8}  {'errors':>6}  {'p50 ms':>7}  {'p99 ms':>7}  CPU s per process")
    for run in report.runs:
        cpu = " ".join(f"{k}={v}" for k, v in run.cpu_s.items())
        print(f"{run.workers:>7}  {run.throughput_rps:>8,.0f}  {run.errors:>6}  {run.p50_ms:>7.2f}  "
              f"{run.p99_ms:>7.2f}  {cpu}")
    if report.ratio is not None:
        first, last = report.runs[0].workers, report.runs[-1].workers
        print(f"\n--workers {last} / --workers {first}: {report.ratio:.2f}x throughput")
    cores = int(m["cores"])  # type: ignore[call-overload]
    if cores < TARGET_CORES:
        print(f"NOTE: {cores} cores: the target (N=4 >= {TARGET_RATIO:g}x N=1) needs {TARGET_CORES} or more; "
              "here the workers, writer, handlers and load generators share the cores")
    if warning := busy_warning(m):
        print(f"WARNING: {warning}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--workers", default="1,4", help="comma-separated worker counts to compare, smallest first")
    p.add_argument("--handlers", type=int, default=4, help="handler service processes, sharing one port")
    p.add_argument("--loadgens", type=int, default=4, help="load-generator processes")
    p.add_argument("--concurrency", type=int, default=128, help="closed-loop clients, over all load generators")
    p.add_argument("--keys", type=int, default=1000, help="distinct Counter keys, over all load generators")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    p.add_argument("--verify-keys", type=int, default=50, help="counters read back after each run")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) on success")
    args = p.parse_args(argv)
    try:
        args.workers = [int(n) for n in args.workers.split(",") if n]
    except ValueError:
        p.error("--workers takes comma-separated numbers, e.g. 1,4")
    for name in ("handlers", "loadgens", "concurrency", "keys"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if not args.workers or min(args.workers) < 1:
        p.error("--workers takes numbers of at least 1")
    if args.concurrency < args.loadgens or args.keys < args.loadgens:
        p.error("--concurrency and --keys must be at least --loadgens (they are split between them)")
    return args


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-scaling-"))
    command = "python -m benchmarks.scaling" + (" " + shlex.join(argv) if argv else "")
    print(f"{command}\nlogs: {tmp}", flush=True)
    machine = machine_info()
    runs: list[Run] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            for workers in args.workers:
                runs.append(await run_workers(workers, args, tmp, session))
        except BenchError as exc:
            print(f"\nFAILED: {exc}\nlogs kept in {tmp}", file=sys.stderr)
            return 1
    first, last = runs[0].throughput_rps, runs[-1].throughput_rps
    settings = {k: getattr(args, k) for k in ("workers", "handlers", "loadgens", "concurrency", "keys", "duration",
                                               "warmup", "durability")}
    report = Report(command=command, machine=machine, settings=settings, runs=runs,
                    ratio=round(last / first, 2) if len(runs) > 1 and first else None)
    print_report(report)
    write_json(args.json, report)
    mismatches = [m for run in runs for v in run.verification for m in v.mismatches]
    if mismatches or any(run.errors for run in runs):
        print("FAILED: " + ("; ".join(mismatches[:5]) or "requests failed") + f"\nlogs kept in {tmp}")
        return 1
    print(f"verified: {sum(v.keys_checked for run in runs for v in run.verification)} counters equal the "
          "successful adds")
    leave_tmp(tmp, args.keep)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
