"""One Restate phase of ``benchmarks.run --peers``, run INSIDE a loopback-only network namespace.

    unshare -n -- python -m benchmarks.peers.restate_ns --out result.json --dir LOGDIR \\
        --binary .bench/peers/npm/.../restate-server --peer-python .bench/peers/venv/bin/python \\
        [--http11] --settings '{"duration": 10, ...}'

Why a namespace: the Restate server tries to reach the internet when it starts, and no setting
stops it; it must never run on the open network. ``unshare -n`` gives this process a network
namespace of its own whose only interface is ``lo``; this module brings ``lo`` up, refuses to go on
if any other interface or any route exists, and starts everything that must talk to the server
inside it: the server, the SDK's handler service (hypercorn) and the load generator (this process,
through ``benchmarks.run.run_scenario``, the same code that measures the other systems). Nothing
else can reach in, so the ports are fixed: ingress 8080, admin 9070, node 5122, handlers 9080.

The records go to ``--out`` as JSON after every scenario (``{"records": [...], "error": ...}``), so
a phase that breaks half-way still returns what it measured. PIDs are global (only the network is
unshared), so CPU is read from ``/proc/PID/stat`` exactly as for the other systems; ``loadgen`` is
this process. SIGTERM stops the servers on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec
import uvloop

from benchmarks.peers.common import PeerResult, completions_check
from benchmarks.procs import BenchError, Procs, http_ok, wait_until
from benchmarks.run import SCENARIOS, run_scenario

INGRESS = "http://127.0.0.1:8080"
ADMIN = "http://127.0.0.1:9070"
HANDLERS_PORT = 9080


def isolate() -> None:
    """Bring ``lo`` up and prove that it is the only way out: no other link, no route off the host."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30)
    links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True,
                           timeout=30).stdout
    names = [line.split(":")[1].strip() for line in links.splitlines() if line.strip()]
    if names != ["lo"]:
        raise BenchError(f"refusing to start the Restate server: this namespace has links {names}, "
                         "expected only 'lo' (run under 'unshare -n')")
    for family in ("-4", "-6"):
        routes = subprocess.run(["ip", family, "route", "show", "table", "main"], check=True,
                                capture_output=True, text=True, timeout=30).stdout.strip()
        if any(not line.split()[0].startswith(("127.", "::1")) and " dev lo" not in line
               for line in routes.splitlines()):
            raise BenchError(f"refusing to start the Restate server: a route off the host exists: {routes}")


def _write(out: Path, result: PeerResult) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(result))
    tmp.replace(out)


async def run_phase(args: argparse.Namespace, result: PeerResult) -> None:
    settings = argparse.Namespace(**json.loads(args.settings))
    system = "restate-h1" if args.http11 else "restate-h2"
    # SIGTERM (the parent gave up waiting) cancels this task: the finally below stops the servers.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    procs = Procs(args.dir)
    # Durable as the sidecar's --durability fsync: the log server's RocksDB WAL is fsynced (the
    # default, said explicitly); telemetry off (it could not get out anyway); plain-text logs.
    procs.env.update({
        "RESTATE_BIND_IP": "127.0.0.1",
        "RESTATE_DISABLE_TELEMETRY": "true",
        "RESTATE_LOG_SERVER__ROCKSDB_DISABLE_WAL_FSYNC": "false",
        "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
    })
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            procs.start("restate-server", [args.binary, "--base-dir", str(args.dir / "restate-data"),
                                           "--node-name", "bench", "--no-logo"])
            # The SDK service as Restate documents it: hypercorn, with the SDK's own hypercorn settings
            # (hypercorn.toml: no connection recycling), uvloop as every other system here, one worker.
            hypercorn = str(Path(args.peer_python).parent / "hypercorn")
            procs.start("hypercorn", [hypercorn, "--config", str(Path(__file__).with_name("hypercorn.toml")),
                                      "-k", "uvloop", "--workers", "1", "--bind", f"127.0.0.1:{HANDLERS_PORT}",
                                      "benchmarks.peers.restate_app:app"])
            await wait_until("restate admin /health", http_ok(session, f"{ADMIN}/health"), procs, timeout=60)
            await wait_until("restate-sdk /health", http_ok(session, f"http://127.0.0.1:{HANDLERS_PORT}/health"),
                             procs, timeout=60)
            body = {"uri": f"http://127.0.0.1:{HANDLERS_PORT}", "use_http_11": bool(args.http11)}
            async with session.post(f"{ADMIN}/deployments", json=body) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise BenchError(f"registering the deployment ({body}) failed: {resp.status} {text[:300]}")
            await wait_until("restate ingress to answer Steps/run", _steps_ok(session), procs, timeout=60)
            for name in settings.scenarios:
                scenario, check = SCENARIOS[name], None
                if not scenario.verify_counter:  # Steps: count the invocations Restate completed
                    count = _completed_count(session, "Steps")
                    check = completions_check(count, await count(), "Steps invocations Restate completed")
                record = await run_scenario(scenario, system, INGRESS, procs, settings, session,
                                            durability="fsync", check=check)
                result.records.append(record)
                _write(args.out, result)
    finally:
        procs.close()


def _completed_count(session: aiohttp.ClientSession, service: str):  # type: ignore[no-untyped-def]
    """Completed invocations of ``service``, from Restate's SQL introspection (kept for the
    journal retention, a day by default, so none expire during a run)."""
    query = {"query": f"SELECT count(*) AS n FROM sys_invocation WHERE target_service_name = '{service}' "
                      "AND status = 'completed'"}

    async def count() -> int:
        async with session.post(f"{ADMIN}/query", json=query, headers={"accept": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=60)) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise BenchError(f"restate admin /query failed: {resp.status} {body[:300]!r}")
            return int(msgspec.json.decode(body)["rows"][0]["n"])

    return count


def _steps_ok(session: aiohttp.ClientSession):  # type: ignore[no-untyped-def]
    """Ready when an invocation goes all the way through: registered, partitions led, SDK reached."""
    async def probe() -> bool:
        async with session.post(f"{INGRESS}/Steps/run", data=b"7",
                                headers={"content-type": "application/json"}) as resp:
            return resp.status == 200 and msgspec.json.decode(await resp.read()) == 13

    return probe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers.restate_ns", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dir", type=Path, required=True, help="logs and the server's data dir go here")
    p.add_argument("--binary", required=True, help="the restate-server binary")
    p.add_argument("--peer-python", required=True, help="the peers' venv python (hypercorn sits beside it)")
    p.add_argument("--http11", action="store_true", help='register with "use_http_11": true')
    p.add_argument("--settings", required=True, help="JSON: duration, warmup, concurrency, keys, ...")
    args = p.parse_args(argv)
    result = PeerResult()
    try:
        isolate()
        uvloop.run(run_phase(args, result))
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BenchError) else str(exc)
    except asyncio.CancelledError:
        result.error = "stopped by SIGTERM (the phase ran past its time budget)"
    _write(args.out, result)
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
