"""Run every scenario against the baseline (bare proxy) and the sidecar, and print them side by side.

    python -m benchmarks.run [--duration 10] [--concurrency 32] [--keys 1000] [--durability fsync] [--json out.json]

All on loopback, on free ports, in one process tree: this process is the load generator; it starts
(1) ``benchmarks.baseline_handlers`` behind ``benchmarks.proxy``, runs the scenarios, stops them;
(2) the handler service (``python -m handler_sdk benchmarks.scenarios:ALL``) and ``sidecar serve``
on a fresh data dir, runs the same scenarios through the sidecar's ingress, stops them. After each
Counter run the counters are read back and checked against the successful adds counted.
Process logs go to a temp dir, kept (and printed) when anything fails. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
import msgspec
import uvloop

from benchmarks import logic
from benchmarks.loadgen import KEY_MODES, LoadResult, run_load
from benchmarks.procs import BenchError, Procs, cpu_seconds, free_port, http_ok, machine_info, \
    sidecar_executable, wait_until


class Scenario(msgspec.Struct, frozen=True):
    name: str
    path: str  # appended to the system's base URL; ``{key}`` is filled by the load generator
    n: int  # the request body
    verify_counter: bool = False  # read the counters back afterwards and check them
    check_steps: bool = False  # every response must equal logic.apply_steps(n)


SCENARIOS = {
    "counter": Scenario("counter", "/Counter/{key}/add", n=1, verify_counter=True),
    "steps": Scenario("steps", "/Steps/run", n=7, check_steps=True),
}
SYSTEMS = ("proxy", "sidecar")


class Verification(msgspec.Struct):
    ok: bool
    keys_checked: int
    mismatches: list[str]  # "k17: expected 41, got 40"


class Record(msgspec.Struct, kw_only=True):
    scenario: str
    system: str
    durability: str | None  # the sidecar's --durability; None for the proxy
    url: str
    concurrency: int
    keys: int
    duration_s: float
    requests: int
    errors: int
    error_kinds: dict[str, int]
    warmup_errors: int
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    #: CPU seconds each process spent during the measured window (``loadgen`` is this process)
    cpu_s: dict[str, float]
    #: CPU microseconds per successful request, all processes together
    cpu_us_per_request: float
    verification: Verification | None = None


class Ratio(msgspec.Struct):
    scenario: str
    throughput: float  # sidecar req/s / proxy req/s
    p99: float  # sidecar p99 / proxy p99


class Report(msgspec.Struct):
    command: str
    python_executable: str
    machine: dict[str, object]
    settings: dict[str, object]
    records: list[Record]
    ratios: list[Ratio]


# --- one scenario against one running system --------------------------------------------------


async def run_scenario(
    scenario: Scenario, system: str, base_url: str, procs: Procs, args: argparse.Namespace,
    session: aiohttp.ClientSession,
) -> Record:
    samples: dict[str, dict[str, float]] = {}

    def sample(phase: str) -> None:
        cpu = {"loadgen": cpu_seconds(os.getpid(), tree=False)}
        cpu.update(procs.cpu())
        samples[phase] = cpu

    expect: object = msgspec.UNSET
    if scenario.check_steps:
        expect = await logic.apply_steps(scenario.n)
    url = base_url + scenario.path
    print(f"  {scenario.name:8s} {system:8s} {url} ...", flush=True)
    result: LoadResult = await run_load(
        url, body=msgspec.json.encode(scenario.n), concurrency=args.concurrency, keys=args.keys,
        key_mode=args.key_mode, duration=args.duration, warmup=args.warmup, expect=expect,
        on_phase=sample,
    )
    procs.check_alive()  # a server that died under load is a failure, not a slow result
    cpu = {name: round(samples["drain"][name] - samples["measure"].get(name, 0.0), 2) for name in samples["drain"]}
    verification = None
    if scenario.verify_counter:
        verification = await verify_counter(session, base_url, scenario, result, args.verify_keys)
    print(f"           {result.summary()}", flush=True)
    return Record(
        scenario=scenario.name, system=system,
        durability=args.durability if system == "sidecar" else None,
        url=url, concurrency=result.concurrency, keys=result.keys, duration_s=result.duration_s,
        requests=result.requests, errors=result.errors, error_kinds=result.error_kinds,
        warmup_errors=result.warmup_errors, throughput_rps=result.throughput_rps,
        p50_ms=result.p50_ms, p90_ms=result.p90_ms, p99_ms=result.p99_ms, max_ms=result.max_ms,
        mean_ms=result.mean_ms, cpu_s=cpu,
        cpu_us_per_request=round(sum(cpu.values()) / result.requests * 1e6, 1) if result.requests else 0.0,
        verification=verification,
    )


async def verify_counter(
    session: aiohttp.ClientSession, base_url: str, scenario: Scenario, result: LoadResult, sample_size: int,
) -> Verification:
    """Read a sample of counters back: each must equal (successful adds for that key) * n.

    A request whose outcome the load generator could not know (timeout, connection lost) widens
    the accepted range for its key instead of being guessed either way.
    """
    touched = sorted(set(result.per_key_ok) | set(result.per_key_indeterminate))
    keys = random.Random(0).sample(touched, min(sample_size, len(touched)))
    mismatches = []
    for key in sorted(keys):
        low = result.per_key_ok.get(key, 0) * scenario.n
        high = low + result.per_key_indeterminate.get(key, 0) * scenario.n
        url = base_url + scenario.path.replace("{key}", key).removesuffix("/add") + "/get"
        try:
            async with session.post(url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    mismatches.append(f"{key}: GET failed with {resp.status}: {body[:200]!r}")
                    continue
            got = msgspec.json.decode(body)
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            mismatches.append(f"{key}: read failed: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(got, int) or not low <= got <= high:
            want = str(low) if low == high else f"{low}..{high}"
            mismatches.append(f"{key}: expected {want}, got {got!r}")
    return Verification(ok=not mismatches, keys_checked=len(keys), mismatches=mismatches)


# --- the two systems ------------------------------------------------------------------------------


async def bench_proxy(args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession) -> list[Record]:
    procs = Procs(log_dir)
    try:
        upstream, port = free_port(), free_port()
        procs.start("baseline", [sys.executable, "-m", "benchmarks.baseline_handlers", "--port", str(upstream)])
        procs.start("proxy", [sys.executable, "-m", "benchmarks.proxy", "--port", str(port),
                              "--upstream", f"http://127.0.0.1:{upstream}"])
        await wait_until("baseline handlers", http_ok(session, f"http://127.0.0.1:{upstream}/health"), procs)
        await wait_until("proxy", http_ok(session, f"http://127.0.0.1:{port}/health"), procs)
        base = f"http://127.0.0.1:{port}"
        return [await run_scenario(SCENARIOS[s], "proxy", base, procs, args, session) for s in args.scenarios]
    finally:
        procs.close()


async def bench_sidecar(args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession) -> list[Record]:
    procs = Procs(log_dir)
    try:
        sidecar = sidecar_executable()
        data_dir = log_dir / "sidecar-data"
        handler_port, ingress, admin = free_port(), free_port(), free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                 "--port", str(handler_port)])
        await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
        procs.start("sidecar", [
            *sidecar, "serve", "--data-dir", str(data_dir), "--ingress", f"127.0.0.1:{ingress}",
            "--admin", f"127.0.0.1:{admin}", "--register", handler_url, "--durability", args.durability,
        ])
        admin_url = f"http://127.0.0.1:{admin}"
        await wait_until("sidecar admin /health", http_ok(session, f"{admin_url}/health"), procs)
        await wait_until("Counter and Steps in GET /services",
                         services_listed(session, f"{admin_url}/services", {"Counter", "Steps"}), procs)
        base = f"http://127.0.0.1:{ingress}"
        await wait_until("sidecar ingress /restate/health", http_ok(session, f"{base}/restate/health"), procs)
        return [await run_scenario(SCENARIOS[s], "sidecar", base, procs, args, session) for s in args.scenarios]
    finally:
        procs.close()


def services_listed(session: aiohttp.ClientSession, url: str, wanted: set[str]):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        async with session.get(url) as resp:
            if resp.status != 200:
                return False
            return wanted <= _names(msgspec.json.decode(await resp.read()))

    return probe


def _names(doc: object) -> set[str]:
    """Every ``"name"`` in a JSON document: ``GET /services`` may be a list or ``{"services": [...]}``."""
    found: set[str] = set()
    if isinstance(doc, dict):
        if isinstance(doc.get("name"), str):
            found.add(doc["name"])
        for value in doc.values():
            found |= _names(value)
    elif isinstance(doc, list):
        for value in doc:
            found |= _names(value)
    return found


# --- report ----------------------------------------------------------------------------------------


def ratios(records: list[Record]) -> list[Ratio]:
    out = []
    by = {(r.scenario, r.system): r for r in records}
    for name in SCENARIOS:
        px, sc = by.get((name, "proxy")), by.get((name, "sidecar"))
        if px and sc and px.throughput_rps and px.p99_ms:
            out.append(Ratio(name, round(sc.throughput_rps / px.throughput_rps, 3), round(sc.p99_ms / px.p99_ms, 2)))
    return out


def print_table(report: Report) -> None:
    m = report.machine
    print()
    print(f"machine: {m['cores']} cores, {m['cpu_model']}, {m['implementation']} {m['python']}, "
          f"{m['platform']}, git {m['git']}, load average at start {m['loadavg_at_start']}")
    print(f"command: {report.command}")
    s = report.settings
    print(f"settings: concurrency {s['concurrency']}, keys {s['keys']} ({s['key_mode']}), "
          f"warmup {s['warmup']}s, duration {s['duration']}s, sidecar durability {s['durability']}")
    print()
    header = ("scenario", "system", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU us/req", "CPU s per process")
    rows = [header]
    for r in report.records:
        system = r.system if r.durability is None else f"{r.system} ({r.durability})"
        errors = str(r.errors) + (f" (+{r.warmup_errors} warmup)" if r.warmup_errors else "")
        cpu = " ".join(f"{k}={v:.2f}" for k, v in r.cpu_s.items())
        rows.append((r.scenario, system, f"{r.throughput_rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                     f"{r.p99_ms:.2f}", errors, f"{r.cpu_us_per_request:,.0f}", cpu))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if 2 <= j <= 7 else cell.ljust(w)
                        for j, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    busy = _busy(m)
    if busy:
        print(f"WARNING: {busy}")
    if report.ratios:
        print()
        for q in report.ratios:
            print(f"{q.scenario}: sidecar/proxy throughput {q.throughput:.2f}x, p99 {q.p99:.2f}x")
    for r in report.records:
        if r.errors or r.warmup_errors:
            print(f"WARNING: {r.scenario}/{r.system}: {r.errors} errors in the window, {r.warmup_errors} in "
                  f"warmup: {r.error_kinds}")
        if r.verification is not None:
            v = r.verification
            if v.ok:
                print(f"verified: {r.scenario}/{r.system}: {v.keys_checked} counters equal the successful adds")
            else:
                print(f"CORRECTNESS MISMATCH: {r.scenario}/{r.system}: {len(v.mismatches)} of {v.keys_checked} "
                      "counters differ from the successful adds the load generator counted:")
                for line in v.mismatches[:20]:
                    print(f"    {line}")


def _busy(machine: dict[str, object]) -> str:
    """A warning when other work was using the CPUs as the run began (empty when quiet)."""
    try:
        load = float(str(machine["loadavg_at_start"]).split()[0])
        cores = int(machine["cores"])  # type: ignore[call-overload]
    except (KeyError, ValueError, TypeError):
        return ""
    if load <= 0.25 * cores:
        return ""
    return (f"the 1-minute load average was {load} on {cores} cores before this run started: other work "
            "shared the CPUs, so these numbers understate both systems; rerun on a quiet machine")


# --- entry point -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    p.add_argument("--keys", type=int, default=1000, help="distinct Counter keys")
    p.add_argument("--key-mode", choices=KEY_MODES, default="round-robin")
    p.add_argument("--durability", choices=("fsync", "none"), default="fsync", help="the sidecar's")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of: proxy,sidecar")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of: counter,steps")
    p.add_argument("--verify-keys", type=int, default=50, help="counters read back after each Counter run")
    p.add_argument("--json", metavar="PATH", help="also write the records as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, sidecar data) on success")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for value, allowed, flag in ((args.systems, SYSTEMS, "--systems"), (args.scenarios, tuple(SCENARIOS), "--scenarios")):
        if not value or set(value) - set(allowed):
            p.error(f"{flag} takes a comma-separated subset of {','.join(allowed)}")
    return args


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    command = "python -m benchmarks.run" + (" " + shlex.join(argv) if argv else "")
    print(f"{command}\nlogs: {tmp}", flush=True)
    machine = machine_info()
    records: list[Record] = []
    failed = False
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            if "proxy" in args.systems:
                records += await bench_proxy(args, tmp, session)
            if "sidecar" in args.systems:
                records += await bench_sidecar(args, tmp, session)
    except BenchError as exc:
        print(f"\nFAILED: {exc}\nlogs kept in {tmp}", file=sys.stderr)
        failed = True
    settings = {k: getattr(args, k) for k in ("duration", "warmup", "concurrency", "keys", "key_mode",
                                               "durability", "systems", "scenarios")}
    report = Report(command=command, python_executable=sys.executable, machine=machine,
                    settings=settings, records=records, ratios=ratios(records))
    if records:
        print_table(report)
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        print(f"\nJSON: {args.json}")
    mismatch = any(r.verification is not None and not r.verification.ok for r in records)
    if failed or mismatch:
        if mismatch:
            print(f"logs kept in {tmp}")
        return 1
    if args.keep:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return uvloop.run(amain(parse_args(argv), argv))
    except KeyboardInterrupt:  # the servers were stopped on the way out (every phase has a finally)
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
