"""Run every scenario against the baseline (bare proxy) and the sidecar, and print them side by side.

    python -m benchmarks.run [--duration 10] [--concurrency 32] [--keys 1000] [--durability fsync] [--json out.json]
    python -m benchmarks.run --peers     # also Restate (HTTP/2 and HTTP/1.1) and DBOS: benchmarks.peers
    python -m benchmarks.run --webhooks  # the sidecar also delivers a webhook per invocation (204 at once)

All on loopback, on free ports, in one process tree: this process is the load generator; it starts
(1) ``benchmarks.baseline_handlers`` behind ``benchmarks.proxy``, runs the scenarios, stops them;
(2) the handler service (``python -m handler_sdk benchmarks.scenarios:ALL``) and ``sidecar serve``
on a fresh data dir, runs the same scenarios through the sidecar's ingress, stops them; (3) with
``--peers``, each peer in turn (``benchmarks.peers.bench``), installed first if needed. After each
Counter run the counters are read back and checked against the successful adds counted.
Process logs go to a temp dir, kept (and printed) when anything fails. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec

from benchmarks import logic
from benchmarks.loadgen import KEY_MODES, LoadResult, run_load
from benchmarks.procs import BenchError, Procs, cpu_seconds, free_port, http_ok, machine_info, \
    run_cli, busy_warning, leave_tmp, sidecar_executable, wait_until, write_json


class Scenario(msgspec.Struct, frozen=True):
    name: str
    path: str  # appended to the system's base URL; ``{key}`` is filled by the load generator
    n: int  # the request body
    verify_counter: bool = False  # read the counters back afterwards and check them
    check_steps: bool = False  # every response must equal logic.apply_steps(n)
    keys: int | None = None  # overrides --keys (the hot-key scenario's single key)


SCENARIOS = {
    "counter": Scenario("counter", "/Counter/{key}/add", n=1, verify_counter=True),
    # Every client on one key: per-key serialization makes this latency-bound. Its own key name
    # ("hot-k0"), so that the counter scenario's adds to k0 do not count against its check.
    "hotkey": Scenario("hotkey", "/Counter/hot-{key}/add", n=1, verify_counter=True, keys=1),
    "steps": Scenario("steps", "/Steps/run", n=7, check_steps=True),
}
#: "cluster": 3 NATS servers and 3 nodes on this machine (``benchmarks/cluster.py``).
SYSTEMS = ("proxy", "sidecar", "cluster")
#: the peers ``--peers`` adds (``benchmarks.peers``): Restate with its SDK discovered over HTTP/2
#: (bidirectional streams, its default) and over HTTP/1.1 (request/response), and DBOS
PEERS = ("restate-h2", "restate-h1", "dbos")
LABELS = {"restate-h2": "restate HTTP/2", "restate-h1": "restate HTTP/1.1", "dbos": "dbos SQLite"}


class Verification(msgspec.Struct):
    ok: bool
    keys_checked: int
    mismatches: list[str]  # "k17: expected 41, got 40"
    #: what was checked, when it is not counters (a peer's count of completed workflows)
    detail: str = ""


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
    #: The sidecar's mean group-commit size over the scenario (batches per durable commit, as
    #: counted by its worker processes' /metrics).
    group_commit_mean: float | None = None
    #: which of ``--rounds`` produced it (1 when there is one)
    round: int = 1


class Missing(msgspec.Struct):
    """A scenario a system has no result for, and why: never a silently empty row."""

    scenario: str
    system: str
    kind: str  # "n/a" (no equivalent in that system), "unavailable" (not installed), "failed" (broke)
    reason: str


def failure_reason(exc: BaseException) -> str:
    """One line for the table: the error's first line and, after a log tail, its last (the cause)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    reason = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: ... {lines[-1]}"
    return reason if len(reason) <= 300 else reason[:297] + "..."


class Ratio(msgspec.Struct):
    scenario: str
    versus: str  # the system the sidecar is divided by: "proxy", "restate-h2", "restate-h1", "dbos"
    throughput: float  # sidecar req/s / its req/s
    p99: float  # sidecar p99 / its p99
    system: str = "sidecar"  # or "cluster": the sidecar's nodes on NATS


class Report(msgspec.Struct):
    command: str
    python_executable: str
    machine: dict[str, object]
    settings: dict[str, object]
    records: list[Record]
    ratios: list[Ratio]
    missing: list[Missing] = []
    #: with ``--rounds`` above 1, every round's records; ``records`` holds each pair's median round
    rounds: list[Record] = []


# --- one scenario against one running system --------------------------------------------------


async def run_scenario(
    scenario: Scenario, system: str, base_url: str, procs: Procs, args: argparse.Namespace,
    session: aiohttp.ClientSession, *, durability: str | None = None,
    check: Callable[[LoadResult], Awaitable[Verification]] | None = None,
) -> Record:
    """Drive ``scenario`` against ``base_url`` and measure it; ``check`` verifies a non-Counter run
    (a peer counting the workflows it recorded) from the load generator's whole-run counts."""
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
        url, body=msgspec.json.encode(scenario.n), concurrency=args.concurrency, keys=scenario.keys or args.keys,
        key_mode=args.key_mode, duration=args.duration, warmup=args.warmup, expect=expect,
        on_phase=sample,
    )
    procs.check_alive()  # a server that died under load is a failure, not a slow result
    cpu = {name: round(samples["drain"][name] - samples["measure"].get(name, 0.0), 2) for name in samples["drain"]}
    verification = None
    if scenario.verify_counter:
        verification = await verify_counter(session, base_url, scenario, result, args.verify_keys)
    elif check is not None:
        verification = await check(result)
    print(f"           {result.summary()}", flush=True)
    return Record(
        scenario=scenario.name, system=system, durability=durability,
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
            # No body and no content-type: Restate's ingress rejects a body for a handler without input.
            async with session.post(url, skip_auto_headers=("Content-Type",)) as resp:
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


async def bench_sidecar(args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession,
                        env: dict[str, str] | None = None) -> list[Record]:
    """The scenarios through the sidecar; ``env`` adds to its and its handler service's environment."""
    procs = Procs(log_dir)
    procs.env.update(env or {})
    try:
        sidecar = sidecar_executable()
        data_dir = log_dir / "sidecar-data"
        handler_port, ingress, admin = free_port(), free_port(), free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                 "--port", str(handler_port)])
        await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
        webhooks: list[str] = []
        receiver = ""
        if args.webhooks:
            receiver = f"http://127.0.0.1:{free_port()}"
            procs.start("webhook-receiver", [sys.executable, "-m", "benchmarks.webhook_receiver",
                                             "--port", receiver.rsplit(":", 1)[1]])
            await wait_until("webhook receiver /count", http_ok(session, f"{receiver}/count"), procs)
            webhooks = ["--webhook", f"{receiver}/"]
        procs.start("sidecar", [
            *sidecar, "serve", "--data-dir", str(data_dir), "--ingress", f"127.0.0.1:{ingress}",
            "--admin", f"127.0.0.1:{admin}", "--register", handler_url, "--durability", args.durability,
            "--workers", str(args.workers), *webhooks,
        ])
        admin_url = f"http://127.0.0.1:{admin}"
        await wait_until("sidecar admin /health", http_ok(session, f"{admin_url}/health"), procs)
        await wait_until("Counter and Steps in GET /services",
                         services_listed(session, f"{admin_url}/services", {"Counter", "Steps"}), procs)
        base = f"http://127.0.0.1:{ingress}"
        await wait_until("sidecar ingress /restate/health", http_ok(session, f"{base}/restate/health"), procs)
        records = []
        for name in args.scenarios:
            before = await commit_counts(session, admin_url)
            record = await run_scenario(SCENARIOS[name], "sidecar", base, procs, args, session,
                                        durability=args.durability)
            commits, batches = (a - b for a, b in zip(await commit_counts(session, admin_url), before))
            record.group_commit_mean = round(batches / commits, 1) if commits else None
            print(f"           group commit: {record.group_commit_mean} write batches per durable commit", flush=True)
            records.append(record)
        if webhooks:
            await report_webhooks(session, receiver, admin_url, procs)
        return records
    finally:
        procs.close()


async def report_webhooks(session: aiohttp.ClientSession, receiver: str, admin_url: str, procs: Procs) -> None:
    """Print how many webhooks the receiver took, once the sidecar's backlog is empty (or 30 s)."""
    async def backlog() -> float:
        async with session.get(f"{admin_url}/metrics") as response:
            text = await response.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("sidecar_webhook_backlog{"))

    async def drained() -> bool:
        return await backlog() == 0
    try:
        await wait_until("an empty webhook backlog", drained, procs)
    except BenchError as exc:
        print(f"           webhooks: {exc}", flush=True)
    async with session.get(f"{receiver}/count") as response:
        taken = await response.json()
    print(f"           webhooks: {taken} delivered, {await backlog():g} left", flush=True)


async def commit_counts(session: aiohttp.ClientSession, admin_url: str) -> tuple[float, float]:
    """(group commits, batches committed) so far, from the sidecar's Prometheus metrics."""
    async with session.get(f"{admin_url}/metrics") as response:
        text = await response.text()
    values = {"sidecar_group_commits_total": 0.0, "sidecar_committed_batches_total": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values["sidecar_group_commits_total"], values["sidecar_committed_batches_total"]


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


#: the order of the rows in each scenario, and of the systems the sidecar is divided by
ORDER = ("proxy", "sidecar", "cluster", *PEERS)
VERSUS = (*PEERS, "proxy")


def label(system: str, durability: str | None = None) -> str:
    name = LABELS.get(system, system)
    return name if durability is None else f"{name} ({durability})"


def medians(records: list[Record]) -> list[Record]:
    """Per scenario and system, the round with the median throughput (the lower of the middle two):
    a whole measured round, so its percentiles and CPU belong to the same run as its throughput."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.scenario, record.system), []).append(record)
    return [sorted(group, key=lambda r: r.throughput_rps)[(len(group) - 1) // 2] for group in groups.values()]


def ratios(records: list[Record]) -> list[Ratio]:
    out = []
    by = {(r.scenario, r.system): r for r in records}
    for name in SCENARIOS:
        for system in ("sidecar", "cluster"):
            sc = by.get((name, system))
            for other in VERSUS:
                px = by.get((name, other))
                if px and sc and px.throughput_rps and px.p99_ms:
                    out.append(Ratio(name, other, round(sc.throughput_rps / px.throughput_rps, 3),
                                     round(sc.p99_ms / px.p99_ms, 2), system))
    return out


def _rank(scenario: str, system: str) -> tuple[int, int]:
    names = list(SCENARIOS)
    return (names.index(scenario) if scenario in names else len(names),
            ORDER.index(system) if system in ORDER else len(ORDER))


def print_table(report: Report) -> None:
    m = report.machine
    print()
    print(f"machine: {m['cores']} cores, {m['cpu_model']}, {m['implementation']} {m['python']}, "
          f"{m['platform']}, git {m['git']}, load average at start {m['loadavg_at_start']}")
    print(f"command: {report.command}")
    s = report.settings
    print(f"settings: concurrency {s['concurrency']}, keys {s['keys']} ({s['key_mode']}), "
          f"warmup {s['warmup']}s, duration {s['duration']}s, sidecar durability {s['durability']}"
          + ("; peers always fsync" if set(s["systems"]) & set(PEERS) else ""))  # type: ignore[arg-type]
    print()
    header = ("scenario", "system", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU us/req", "CPU s per process")
    ranked: list[tuple[tuple[int, int], tuple[str, ...]]] = []
    for r in report.records:
        errors = str(r.errors) + (f" (+{r.warmup_errors} warmup)" if r.warmup_errors else "")
        cpu = " ".join(f"{k}={v:.2f}" for k, v in r.cpu_s.items())
        ranked.append((_rank(r.scenario, r.system), (
            r.scenario, label(r.system, r.durability), f"{r.throughput_rps:,.0f}", f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", errors, f"{r.cpu_us_per_request:,.0f}", cpu)))
    for gap in report.missing:  # in the table, where the row would be: never silently absent
        ranked.append((_rank(gap.scenario, gap.system),
                       (gap.scenario, label(gap.system), *["—"] * 6, f"{gap.kind}: {gap.reason}")))
    rows = [header] + [row for _, row in sorted(ranked, key=lambda item: item[0])]
    _print_rows(rows, numeric=range(2, 8))
    busy = busy_warning(m)
    if busy:
        print(f"WARNING: {busy}")
    print_rounds(report)
    print_ratios(report)
    for r in report.rounds or report.records:
        name = f"{r.scenario}/{r.system}" + (f" (round {r.round})" if report.rounds else "")
        if r.errors or r.warmup_errors:
            print(f"WARNING: {name}: {r.errors} errors in the window, {r.warmup_errors} in "
                  f"warmup: {r.error_kinds}")
        if r.verification is not None:
            v = r.verification
            if v.ok:
                print(f"verified: {name}: "
                      + (v.detail or f"{v.keys_checked} counters equal the successful adds"))
            elif v.detail:
                print(f"CORRECTNESS MISMATCH: {name}: {v.detail}: {'; '.join(v.mismatches)}")
            else:
                print(f"CORRECTNESS MISMATCH: {name}: {len(v.mismatches)} of {v.keys_checked} "
                      "counters differ from the successful adds the load generator counted:")
                for line in v.mismatches[:20]:
                    print(f"    {line}")


def _print_rows(rows: list[tuple[str, ...]], numeric: range) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if j in numeric else cell.ljust(w)
                        for j, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_rounds(report: Report) -> None:
    """With ``--rounds``: every round's throughput per pair, so the spread is visible."""
    if not report.rounds:
        return
    rows = [("scenario", "system", *(f"round {n} req/s" for n in range(1, max(r.round for r in report.rounds) + 1)))]
    for median in sorted(report.records, key=lambda r: _rank(r.scenario, r.system)):
        by_round = {r.round: r for r in report.rounds if (r.scenario, r.system) == (median.scenario, median.system)}
        rows.append((median.scenario, label(median.system, median.durability),
                     *(f"{by_round[n].throughput_rps:,.0f}" + ("*" if by_round[n] is median else "")
                       if n in by_round else "—" for n in range(1, len(rows[0]) - 1))))
    print()
    print("every round (* the median round, shown above and used for the ratios):")
    _print_rows(rows, numeric=range(2, len(rows[0])))


def print_ratios(report: Report) -> None:
    """sidecar / each other system, per scenario; a missing one says why instead of a number."""
    have = {(q.scenario, q.system, q.versus): q for q in report.ratios}
    gaps = {(g.scenario, g.system): g for g in report.missing}
    ran = {(r.scenario, r.system) for r in report.records}
    rows = [("scenario", "system / ...", "throughput", "p99")]
    for name in SCENARIOS:
        for system in ("sidecar", "cluster"):
            if (name, system) not in ran:
                continue
            for other in VERSUS:
                if (q := have.get((name, system, other))) is not None:
                    rows.append((name, f"{system} / {label(other)}", f"{q.throughput:.2f}x", f"{q.p99:.2f}x"))
                elif (g := gaps.get((name, other))) is not None:
                    rows.append((name, f"{system} / {label(other)}", "—", "—" + f" ({g.kind})"))
    if len(rows) == 1:
        return
    print()
    print("ratios: throughput above 1x means the sidecar serves more requests per second; "
          "p99 below 1x means its tail is shorter")
    _print_rows(rows, numeric=range(2, 4))



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    p.add_argument("--keys", type=int, default=1000, help="distinct Counter keys")
    p.add_argument("--key-mode", choices=KEY_MODES, default="round-robin")
    p.add_argument("--durability", choices=("fsync", "none"), default="fsync", help="the sidecar's")
    p.add_argument("--workers", type=int, default=1,
                   help="the sidecar's worker processes (0: one per core)")
    p.add_argument("--systems", default="proxy,sidecar",
                   help=f"comma-separated subset of: {','.join(SYSTEMS + PEERS)}")
    p.add_argument("--peers", action="store_true",
                   help=f"also run the peers ({','.join(PEERS)}), installing them first if needed")
    p.add_argument("--peers-dir", type=Path, default=None,
                   help="the peers' scratch directory (default: .bench/peers; see benchmarks.peers.install)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of: {','.join(SCENARIOS)}")
    p.add_argument("--verify-keys", type=int, default=50, help="counters read back after each Counter run")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every system this many times, alternating; report each pair's median round")
    p.add_argument("--webhooks", action="store_true",
                   help="the sidecar also delivers webhooks, to a receiver started here that answers 204")
    p.add_argument("--json", metavar="PATH", help="also write the records as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, sidecar data) on success")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    if args.peers:
        args.systems += [s for s in PEERS if s not in args.systems]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    for value, allowed, flag in ((args.systems, SYSTEMS + PEERS, "--systems"),
                                 (args.scenarios, tuple(SCENARIOS), "--scenarios")):
        if not value or set(value) - set(allowed):
            p.error(f"{flag} takes a comma-separated subset of {','.join(allowed)}")
    return args


async def run_round(args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession) -> tuple[
        list[Record], list[Missing]]:
    """Every chosen system once, one after another. Each in its own try: one that breaks is
    reported (as ``failed``), and the others still run."""
    records: list[Record] = []
    missing: list[Missing] = []
    from benchmarks.cluster import bench_cluster  # imports this module: not at the top

    for system, bench in (("proxy", bench_proxy), ("sidecar", bench_sidecar), ("cluster", bench_cluster)):
        if system not in args.systems:
            continue
        try:
            records += await bench(args, log_dir, session)
        except BenchError as exc:
            print(f"\nFAILED: {system}: {exc}\nlogs kept in {log_dir}", file=sys.stderr)
            missing += [Missing(s, system, "failed", failure_reason(exc)) for s in args.scenarios]
    if peers := [s for s in args.systems if s in PEERS]:
        from benchmarks.peers import bench as peer_bench  # imports this module: not at the top

        got, gaps = await peer_bench.run_peers(peers, args, log_dir, session)
        records += got
        missing += gaps
    return records, missing


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    command = "python -m benchmarks.run" + (" " + shlex.join(argv) if argv else "")
    print(f"{command}\nlogs: {tmp}", flush=True)
    machine = machine_info()
    rounds: list[Record] = []
    missing: list[Missing] = []
    failed = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for number in range(1, args.rounds + 1):
            # Each round on fresh data dirs (the counters it checks start from zero) and its own logs.
            round_dir = tmp if args.rounds == 1 else tmp / f"round-{number}"
            if args.rounds > 1:
                round_dir.mkdir()
                print(f"round {number} of {args.rounds}", flush=True)
            got, gaps = await run_round(args, round_dir, session)
            for record in got:
                record.round = number
            rounds += got
            missing += [g for g in gaps if (g.scenario, g.system) not in {(m.scenario, m.system) for m in missing}]
            failed = failed or any(g.kind == "failed" for g in gaps)
    records = medians(rounds)
    settings = {k: getattr(args, k) for k in ("duration", "warmup", "concurrency", "keys", "key_mode",
                                               "durability", "workers", "systems", "scenarios", "rounds", "webhooks")}
    report = Report(command=command, python_executable=sys.executable, machine=machine,
                    settings=settings, records=records, ratios=ratios(records), missing=missing,
                    rounds=rounds if args.rounds > 1 else [])
    if records or missing:
        print_table(report)
    write_json(args.json, report)
    mismatch = any(r.verification is not None and not r.verification.ok for r in rounds)
    if failed or mismatch:
        if mismatch:
            print(f"logs kept in {tmp}")
        return 1
    leave_tmp(tmp, args.keep)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    # Run as ``benchmarks.run``, not ``__main__``: benchmarks.peers imports this module, and there
    # must be one Record class, not two.
    from benchmarks.run import main as _main

    sys.exit(_main())
