"""Durable waits: how late timers fire under load, and what resuming a suspended invocation costs.

    python -m benchmarks.waits timers [--count 1000] [--lead 6] [--spread 1] [--json PATH]
    python -m benchmarks.waits resume [--entries 100] [--count 200] [--concurrency 1] [--json PATH]

Each run starts the handler service (``python -m handler_sdk benchmarks.wait_scenarios:ALL
--suspend-after 0.1``) and ``sidecar serve --workers 1 --durability fsync`` on free loopback ports
with a fresh data dir in a temp dir (process logs there too; kept when anything fails or with
``--keep``), and stops both on the way out, whatever happens.

``timers``: ``--count`` sends of ``WaitBench.timer``, each due at a common instant ``--lead``
seconds after the first send, spread evenly over ``--spread`` seconds, so that every timer is
pending (its invocation suspended) before the first one is due. The admin API's count of suspended
invocations is polled until all are, and must reach ``--count`` before the first due instant. Once
all have finished, each journal is read back: lateness = the ``Now`` the handler journaled on
waking - the ``Sleep`` entry's ``wake_at_ms``; it includes the whole resume path (the fsynced
completion, a new attempt, the handler replaying its journal).

``resume``: ``--count`` sends of ``WaitBench.resume`` whose journals hold ``--entries`` entries
(``Input``, ``entries - 2`` ``ctx.run`` steps, the ``Awakeable``) when they suspend. With every
invocation suspended and an attach request open for each, the sidecar's process tree CPU time
(``/proc``, utime + stime) is sampled, the awakeables are resolved (``--concurrency`` at a time;
each resolve waits for its invocation's attach to return), and CPU is sampled again. Sidecar CPU
per resume = the difference / count: everything the sidecar did in that window, nothing
subtracted: the resolve request, its fsynced completion, reading the journal and sending it in a
new attempt's ``Start``, the handler's ``End``, the fsynced ``Output`` and the attach response.
Wall-clock latency per resume: the resolve POST sent -> its attach response received.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from benchmarks.loadgen import percentile
from benchmarks.procs import BenchError, Procs, free_port, http_ok, machine_info, \
    run_cli, busy_warning, leave_tmp, sidecar_executable, wait_until, write_json

SERVICE = "WaitBench"
TIMER_TARGET_MS = 50.0  # "a timer fires within 50 ms of its due time at 1,000 pending timers"
RESUME_TARGET_MS = 5.0  # "resuming ... a 100-entry journal costs under 5 ms of sidecar time"


class Percentiles(msgspec.Struct):
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    mean_ms: float


def summarize(values: list[float]) -> Percentiles:
    s = sorted(values)
    mean = sum(s) / len(s) if s else 0.0
    return Percentiles(n=len(s), p50_ms=round(percentile(s, 50), 2), p90_ms=round(percentile(s, 90), 2),
                       p99_ms=round(percentile(s, 99), 2), max_ms=round(s[-1] if s else 0.0, 2),
                       min_ms=round(s[0] if s else 0.0, 2), mean_ms=round(mean, 2))


class TimersResult(msgspec.Struct, kw_only=True):
    count: int
    lead_s: float
    spread_s: float
    suspend_after_s: float
    send_s: float  # first send -> last send accepted
    #: the admin API's suspended count, last polled before the first due instant, and when
    suspended_before_due: int
    suspended_polled_ms_before_due: float
    #: timers whose Sleep entry was journaled (by the handler's clock) before the first due instant
    pending_at_first_fire: int
    #: actual wake (the Now journaled on waking) - due (the Sleep entry's wake_at_ms), ms
    lateness: Percentiles
    #: how many invocations ran more than one attempt (i.e. suspended and resumed)
    resumed: int
    #: sidecar process tree CPU from 0.5 s before the first due instant until the last finished
    sidecar_cpu_s_firing: float
    handlers_cpu_s_firing: float
    firing_wall_s: float  # first due instant -> last wake
    target_ms: float = TIMER_TARGET_MS
    #: p99 lateness within target
    meets_target: bool = False


class ResumeResult(msgspec.Struct, kw_only=True):
    count: int
    entries: int  # journal length at suspension (Input + steps + Awakeable)
    concurrency: int
    suspend_after_s: float
    suspended: int  # suspended invocations (admin API) before the measured phase
    measured_wall_s: float
    sidecar_cpu_s: float  # the sidecar's process tree over the measured phase
    handlers_cpu_s: float  # the handler service over the same phase (its replays)
    sidecar_cpu_ms_per_resume: float
    handlers_cpu_ms_per_resume: float
    #: the sidecar's CPU while idle with the same attaches open, per second (context, not subtracted)
    sidecar_idle_cpu_ms_per_s: float
    latency: Percentiles  # resolve POST sent -> attach response received
    resumed: int  # invocations that finished after exactly 2 attempts with the expected output
    target_ms: float = RESUME_TARGET_MS
    meets_target: bool = False


class Report(msgspec.Struct):
    command: str
    python_executable: str
    machine: dict[str, object]
    durability: str
    timers: TimersResult | None = None
    resume: ResumeResult | None = None


# --- processes ---------------------------------------------------------------------------------


class Stack:
    """The handler service and the sidecar, started and ready; ``procs.close()`` stops them."""

    def __init__(self, procs: Procs, ingress: str, admin: str) -> None:
        self.procs = procs
        self.ingress = ingress
        self.admin = admin

    def cpu(self) -> dict[str, float]:
        return self.procs.cpu()


async def start_stack(procs: Procs, args: argparse.Namespace, session: aiohttp.ClientSession) -> Stack:
    sidecar = sidecar_executable()
    handler_port, ingress, admin = free_port(), free_port(), free_port()
    handler_url = f"http://127.0.0.1:{handler_port}"
    procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.wait_scenarios:ALL",
                             "--port", str(handler_port), "--suspend-after", str(args.suspend_after)])
    await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
    procs.start("sidecar", [
        *sidecar, "serve", "--data-dir", str(procs.log_dir / "sidecar-data"), "--ingress", f"127.0.0.1:{ingress}",
        "--admin", f"127.0.0.1:{admin}", "--register", handler_url, "--durability", args.durability,
        "--workers", "1",
    ])
    stack = Stack(procs, f"http://127.0.0.1:{ingress}", f"http://127.0.0.1:{admin}")
    await wait_until("sidecar admin /health", http_ok(session, f"{stack.admin}/health"), procs)
    await wait_until(f"{SERVICE} in GET /services", _service_listed(session, f"{stack.admin}/services"), procs)
    await wait_until("sidecar ingress /restate/health", http_ok(session, f"{stack.ingress}/restate/health"), procs)
    return stack


def _service_listed(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        async with session.get(url) as resp:
            return resp.status == 200 and SERVICE.encode() in await resp.read()

    return probe


async def send_all(session: aiohttp.ClientSession, stack: Stack, handler: str, bodies: list[bytes],
                   concurrency: int) -> list[str]:
    """One-way sends (``.../send``), ``concurrency`` at a time: the invocation IDs, in body order."""
    url = f"{stack.ingress}/{SERVICE}/{handler}/send"
    ids: list[str] = [""] * len(bodies)
    queue = iter(range(len(bodies)))

    async def worker() -> None:
        for i in queue:
            async with session.post(url, data=bodies[i], headers={"content-type": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 202:
                    raise BenchError(f"send {i} to {url}: HTTP {resp.status}: {body[:300]!r}")
                ids[i] = msgspec.json.decode(body)["invocationId"]

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return ids


async def suspended_count(session: aiohttp.ClientSession, stack: Stack) -> int:
    async with session.get(f"{stack.admin}/invocations",
                           params={"status": "suspended", "service": SERVICE, "limit": "10000"}) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise BenchError(f"GET /invocations?status=suspended: HTTP {resp.status}: {body[:300]!r}")
    return len(msgspec.json.decode(body)["invocations"])


async def show_all(session: aiohttp.ClientSession, stack: Stack, ids: list[str], concurrency: int = 16,
                   ) -> list[dict[str, Any]]:
    """``GET /invocations/{id}`` (status, attempts, journal) for each ID, in order."""
    views: list[dict[str, Any]] = [{}] * len(ids)
    queue = iter(range(len(ids)))

    async def worker() -> None:
        for i in queue:
            async with session.get(f"{stack.admin}/invocations/{ids[i]}") as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise BenchError(f"GET /invocations/{ids[i]}: HTTP {resp.status}: {body[:300]!r}")
                views[i] = msgspec.json.decode(body)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(ids)))))
    return views


async def attach(session: aiohttp.ClientSession, stack: Stack, invocation_id: str) -> bytes:
    async with session.get(f"{stack.ingress}/restate/invocation/{invocation_id}/attach",
                           timeout=aiohttp.ClientTimeout(total=600)) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise BenchError(f"attach {invocation_id}: HTTP {resp.status}: {body[:300]!r}")
        return body


def _now_ms() -> float:
    return time.time_ns() / 1e6


# --- timers ------------------------------------------------------------------------------------


async def bench_timers(args: argparse.Namespace, stack: Stack, session: aiohttp.ClientSession) -> TimersResult:
    n = args.count
    loop = asyncio.get_running_loop()
    first_due = int(_now_ms() + args.lead * 1000)
    spread_ms = int(args.spread * 1000)
    dues = [first_due + (i * spread_ms) // max(1, n - 1) if n > 1 else first_due for i in range(n)]
    print(f"timers: sending {n} invocations, due from {args.lead:g} s from now over {args.spread:g} s ...",
          flush=True)
    t0 = loop.time()
    ids = await send_all(session, stack, "timer", [msgspec.json.encode(d) for d in dues], args.send_concurrency)
    send_s = loop.time() - t0
    print(f"  sent in {send_s:.2f} s; waiting for all {n} to suspend", flush=True)

    # Poll the suspended count, never closer than 0.5 s to the first due instant (each poll scans
    # the store in the sidecar: it must not run while the timers fire).
    suspended, polled_at = 0, 0.0
    while _now_ms() < first_due - 500:
        stack.procs.check_alive()
        suspended, polled_at = await suspended_count(session, stack), _now_ms()
        if suspended >= n:
            break
        await asyncio.sleep(0.2)
    polled_before = first_due - polled_at if polled_at else 0.0
    if polled_at:
        print(f"  suspended: {suspended} of {n}, {polled_before:.0f} ms before the first due instant", flush=True)
    else:
        print(f"  the sends took until {(_now_ms() - first_due) / 1000:+.2f} s from the first due instant",
              flush=True)
    if suspended < n:
        raise BenchError(f"only {suspended} of {n} invocations were suspended 0.5 s before the first timer was due: "
                         "raise --lead")

    # Attach now, so that opening the requests is over before the first timer is due.
    attaches = [asyncio.ensure_future(attach(session, stack, i)) for i in ids]
    await asyncio.sleep(max(0.0, (first_due - 500 - _now_ms()) / 1000))
    cpu_before = stack.cpu()
    try:
        outputs = await asyncio.gather(*attaches)
    finally:
        for a in attaches:
            a.cancel()
    cpu_after = stack.cpu()
    stack.procs.check_alive()

    views = await show_all(session, stack, ids)
    lateness: list[float] = []
    planned_at: list[int] = []
    wake_at: list[int] = []
    woke: list[int] = []
    resumed = 0
    for invocation_id, view, output in zip(ids, views, outputs):
        journal = view.get("journal", [])
        sleeps = [e for e in journal if e["kind"] == "Sleep"]
        nows = [e for e in journal if e["kind"] == "Now"]
        if view.get("status") != "completed" or len(sleeps) != 1 or len(nows) != 2:
            raise BenchError(f"{invocation_id}: unexpected end state {view.get('status')!r} or journal "
                             f"{[e['kind'] for e in journal]}")
        if msgspec.json.decode(output) != nows[1]["ms"]:
            raise BenchError(f"{invocation_id}: returned {output!r}, journaled Now {nows[1]['ms']}")
        resumed += view.get("attempts", 0) >= 2
        planned_at.append(nows[0]["ms"])
        wake_at.append(sleeps[0]["wake_at_ms"])
        woke.append(nows[1]["ms"])
        lateness.append(float(nows[1]["ms"] - sleeps[0]["wake_at_ms"]))
    earliest = min(wake_at)
    pending = sum(1 for p in planned_at if p < earliest)
    late = summarize(lateness)
    return TimersResult(
        count=n, lead_s=args.lead, spread_s=args.spread, suspend_after_s=args.suspend_after,
        send_s=round(send_s, 3), suspended_before_due=suspended, suspended_polled_ms_before_due=round(polled_before),
        pending_at_first_fire=pending, lateness=late, resumed=resumed,
        sidecar_cpu_s_firing=round(cpu_after["sidecar"] - cpu_before["sidecar"], 2),
        handlers_cpu_s_firing=round(cpu_after["handlers"] - cpu_before["handlers"], 2),
        firing_wall_s=round((max(woke) - earliest) / 1000, 3), meets_target=late.p99_ms <= TIMER_TARGET_MS,
    )


# --- resume ------------------------------------------------------------------------------------


async def bench_resume(args: argparse.Namespace, stack: Stack, session: aiohttp.ClientSession) -> ResumeResult:
    n, entries = args.count, args.entries
    steps = entries - 2  # + Input + Awakeable
    loop = asyncio.get_running_loop()
    print(f"resume: sending {n} invocations of {steps} steps + an awakeable ({entries} journal entries) ...",
          flush=True)
    ids = await send_all(session, stack, "resume", [msgspec.json.encode(steps)] * n, args.send_concurrency)
    deadline = loop.time() + 300
    while (suspended := await suspended_count(session, stack)) < n:
        stack.procs.check_alive()
        if loop.time() > deadline:
            raise BenchError(f"only {suspended} of {n} invocations suspended after 300 s")
        await asyncio.sleep(0.25)
    print(f"  all {suspended} suspended; reading their awakeable IDs", flush=True)
    awakeables: list[str] = []
    for invocation_id, view in zip(ids, await show_all(session, stack, ids)):
        journal = view["journal"]
        if view["status"] != "suspended" or len(journal) != entries or journal[-1]["kind"] != "Awakeable" \
                or view["attempts"] != 1:
            raise BenchError(f"{invocation_id}: status {view['status']}, attempts {view['attempts']}, "
                             f"journal of {len(journal)} entries ending {journal[-1]['kind']}")
        awakeables.append(journal[-1]["id"])

    # Attach to every invocation first, so that opening the attach requests is outside the window.
    attaches = {i: asyncio.ensure_future(attach(session, stack, i)) for i in ids}
    try:
        return await _resolve_all(args, stack, session, ids, awakeables, attaches, suspended)
    finally:
        for a in attaches.values():
            a.cancel()


async def _resolve_all(args: argparse.Namespace, stack: Stack, session: aiohttp.ClientSession, ids: list[str],
                       awakeables: list[str], attaches: dict[str, asyncio.Future[bytes]], suspended: int,
                       ) -> ResumeResult:
    n, entries = args.count, args.entries
    steps = entries - 2
    loop = asyncio.get_running_loop()
    await asyncio.sleep(1.0)
    if any(a.done() for a in attaches.values()):
        for a in attaches.values():
            if a.done() and a.exception() is not None:
                raise BenchError(f"an attach failed before any resolve: {a.exception()}")
    idle_before, idle_t0 = stack.cpu(), loop.time()
    await asyncio.sleep(2.0)
    idle_after, idle_t1 = stack.cpu(), loop.time()
    idle_rate = (idle_after["sidecar"] - idle_before["sidecar"]) / (idle_t1 - idle_t0)

    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            async with session.post(f"{stack.ingress}/restate/awakeables/{awakeables[i]}/resolve", data=b"1",
                                    headers={"content-type": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 202:
                    raise BenchError(f"resolve {awakeables[i]}: HTTP {resp.status}: {body[:300]!r}")
            output = await attaches[ids[i]]
            latencies.append((time.perf_counter() - started) * 1000)
            if msgspec.json.decode(output) != 1 + steps:
                raise BenchError(f"{ids[i]}: returned {output!r}, expected {1 + steps}")

    print(f"  resolving {n} awakeables, {args.concurrency} at a time (measured)", flush=True)
    before, t0 = stack.cpu(), loop.time()
    await asyncio.gather(*(worker() for _ in range(min(args.concurrency, n))))
    after, t1 = stack.cpu(), loop.time()
    stack.procs.check_alive()

    views = await show_all(session, stack, ids)
    resumed = sum(1 for v in views if v["status"] == "completed" and v["attempts"] == 2)
    sidecar_cpu = after["sidecar"] - before["sidecar"]
    handlers_cpu = after["handlers"] - before["handlers"]
    per_resume = sidecar_cpu / n * 1000
    return ResumeResult(
        count=n, entries=entries, concurrency=args.concurrency, suspend_after_s=args.suspend_after,
        suspended=suspended, measured_wall_s=round(t1 - t0, 3), sidecar_cpu_s=round(sidecar_cpu, 2),
        handlers_cpu_s=round(handlers_cpu, 2), sidecar_cpu_ms_per_resume=round(per_resume, 2),
        handlers_cpu_ms_per_resume=round(handlers_cpu / n * 1000, 2),
        sidecar_idle_cpu_ms_per_s=round(idle_rate * 1000, 1), latency=summarize(latencies), resumed=resumed,
        meets_target=per_resume < RESUME_TARGET_MS,
    )


# --- report ------------------------------------------------------------------------------------


def machine_line(m: dict[str, object]) -> str:
    return (f"machine: {m['cores']} cores, {m['cpu_model']}, {m['implementation']} {m['python']}, "
            f"{m['platform']}, git {m['git']}, load average at start {m['loadavg_at_start']}")



def print_report(report: Report) -> None:
    print()
    print(machine_line(report.machine))
    print(f"command: {report.command}")
    print(f"sidecar: --workers 1 --durability {report.durability}")
    if warning := busy_warning(report.machine):
        print(f"WARNING: {warning}")
    if (t := report.timers) is not None:
        late = t.lateness
        print()
        print(f"timers: {t.count} timers due over {t.spread_s:g} s, {t.lead_s:g} s after the first send "
              f"(sends took {t.send_s:.2f} s); handler --suspend-after {t.suspend_after_s:g}")
        print(f"  suspended before the first due instant (admin API, {t.suspended_polled_ms_before_due:.0f} ms "
              f"before): {t.suspended_before_due}; timers pending when the first fired: {t.pending_at_first_fire}; "
              f"resumed (2+ attempts): {t.resumed}")
        _rows([("lateness (wake - due)", "p50 ms", "p90 ms", "p99 ms", "max ms", "min ms", "target"),
               ("Now journaled on waking - Sleep.wake_at_ms", f"{late.p50_ms:.0f}", f"{late.p90_ms:.0f}",
                f"{late.p99_ms:.0f}", f"{late.max_ms:.0f}", f"{late.min_ms:.0f}",
                f"p99 <= {t.target_ms:.0f} ms: {'met' if t.meets_target else 'MISSED'}")])
        print(f"  firing: {t.firing_wall_s:.2f} s from the first due instant to the last wake; CPU over it: "
              f"sidecar {t.sidecar_cpu_s_firing:.2f} s ({t.sidecar_cpu_s_firing / t.count * 1000:.2f} ms per timer), "
              f"handlers {t.handlers_cpu_s_firing:.2f} s")
    if (r := report.resume) is not None:
        lat = r.latency
        print()
        print(f"resume: {r.count} suspended invocations, {r.entries}-entry journals, resolved {r.concurrency} at a "
              f"time in {r.measured_wall_s:.2f} s; {r.resumed} completed after exactly 2 attempts")
        _rows([("per resume", "sidecar CPU ms", "handlers CPU ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "target"),
               ("resolve -> attach returns", f"{r.sidecar_cpu_ms_per_resume:.2f}",
                f"{r.handlers_cpu_ms_per_resume:.2f}", f"{lat.p50_ms:.2f}", f"{lat.p90_ms:.2f}",
                f"{lat.p99_ms:.2f}", f"{lat.max_ms:.2f}",
                f"sidecar CPU < {r.target_ms:.0f} ms: {'met' if r.meets_target else 'MISSED'}")])
        commits = "both fsynced commits" if report.durability == "fsync" else "both commits (not fsynced)"
        print(f"  sidecar CPU {r.sidecar_cpu_s:.2f} s over the window, everything included (the resolve request, "
              f"{commits}, the journal read and Start, the End, the attach response); for context, the idle "
              f"sidecar used {r.sidecar_idle_cpu_ms_per_s:.1f} ms/s with the attaches open (not subtracted)")


def _rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) if j in (0, len(row) - 1) else c.rjust(w)
                               for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


# --- entry point -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.waits", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--durability", choices=("fsync", "none"), default="fsync", help="the sidecar's")
    common.add_argument("--suspend-after", type=float, default=0.1,
                        help="the handler service's --suspend-after (seconds)")
    common.add_argument("--send-concurrency", type=int, default=32, help="sends in flight while setting up")
    common.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    common.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) on success")
    t = sub.add_parser("timers", parents=[common], help="timer lateness with --count timers pending")
    t.add_argument("--count", type=int, default=1000, help="timers (invocations), all pending at once")
    t.add_argument("--lead", type=float, default=6.0, help="seconds from the first send to the first due instant")
    t.add_argument("--spread", type=float, default=1.0, help="seconds the due instants are spread over")
    r = sub.add_parser("resume", parents=[common], help="sidecar CPU and latency per resume")
    r.add_argument("--entries", type=int, default=100, help="journal entries when suspended (at least 2)")
    r.add_argument("--count", type=int, default=200, help="suspended invocations to resume")
    r.add_argument("--concurrency", type=int, default=1, help="resolves in flight at once")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")
    if args.bench == "resume" and args.entries < 2:
        p.error("--entries must be at least 2 (the Input and the Awakeable)")
    if args.bench == "resume" and args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.bench == "timers" and (args.lead < 1 or args.spread < 0):
        p.error("--lead must be at least 1 s, --spread at least 0")
    return args


def _raise_open_files(needed: int) -> None:
    """Every attach holds a connection open here and in the sidecar (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    _raise_open_files(2 * args.count + 1024)
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-waits-"))
    command = "python -m benchmarks.waits " + shlex.join(argv)
    print(f"{command}\nlogs: {tmp}", flush=True)
    report = Report(command=command, python_executable=sys.executable, machine=machine_info(),
                    durability=args.durability)
    procs = Procs(tmp)
    connector = aiohttp.TCPConnector(limit=0)  # every attach stays open at once
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            try:
                stack = await start_stack(procs, args, session)
                if args.bench == "timers":
                    report.timers = await bench_timers(args, stack, session)
                else:
                    report.resume = await bench_resume(args, stack, session)
            finally:
                procs.close()
    except BenchError as exc:
        print(f"\nFAILED: {exc}\nlogs kept in {tmp}", file=sys.stderr)
        return 1
    print_report(report)
    write_json(args.json, report)
    leave_tmp(tmp, args.keep)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
