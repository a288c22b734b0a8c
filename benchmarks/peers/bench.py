"""The peers' phases of ``benchmarks.run --peers``: Restate (HTTP/2, then HTTP/1.1) and DBOS.

Each peer runs the scenarios ``benchmarks.run`` runs, with the same load generator, the same
requests and the same checks (``run_scenario``). A peer that is not installed, or a scenario a
peer has no equivalent for, comes back as a ``Missing`` row with the reason, never as nothing.

- **Restate**: each mode on a fresh server and data dir, all inside a loopback-only network
  namespace (``restate_ns``, started as ``unshare -n -- python -m benchmarks.peers.restate_ns``);
  this process waits for it and reads its records back from a JSON file.
- **DBOS**: ``dbos_app`` on a fresh SQLite file, on loopback in this namespace, driven from here.
  Counter and hotkey are not applicable (no keyed objects).
After ``steps``, each peer's own durable record is counted (DBOS's ``SUCCESS`` workflows, Restate's
``completed`` invocations) and must equal the successful responses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.peers import install
from benchmarks.peers.common import PeerResult, completions_check
from benchmarks.procs import REPO_ROOT, BenchError, Procs, free_port, http_ok, wait_until
from benchmarks.run import SCENARIOS, Missing, Record, failure_reason, run_scenario

NO_KEYED_OBJECTS = "DBOS has no keyed virtual objects (per-key state, one invocation at a time per key)"


async def run_peers(
    peers: list[str], args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession,
) -> tuple[list[Record], list[Missing]]:
    scratch: Path = args.peers_dir or install.DEFAULT_DIR
    print(f"\npeers: installing or checking them in {scratch} (python -m benchmarks.peers.install)", flush=True)
    records: list[Record] = []
    missing: list[Missing] = []
    try:
        status = await asyncio.to_thread(install.install, scratch)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:  # reported, as any other unavailability
        reason = f"the install step failed: {failure_reason(exc)}"
        return records, [Missing(s, peer, "unavailable", reason) for peer in peers for s in args.scenarios]
    install.print_status(status)
    for peer in peers:
        info = status["peers"]["dbos" if peer == "dbos" else "restate"]
        if not info["available"]:
            missing += [Missing(s, peer, "unavailable", info["reason"]) for s in args.scenarios]
            continue
        try:
            if peer == "dbos":
                got, gaps = await bench_dbos(args, log_dir, session, Path(status["python"]))
            else:
                got, gaps = await bench_restate(args, log_dir, info, Path(status["python"]),
                                                http11=peer == "restate-h1")
        except BenchError as exc:
            print(f"\nFAILED: {peer}: {exc}\nlogs kept in {log_dir}", file=sys.stderr)
            got, gaps = [], []
            missing += [Missing(s, peer, "failed", failure_reason(exc)) for s in args.scenarios]
        records += got
        missing += gaps
    return records, missing


# --- Restate ----------------------------------------------------------------------------------------


async def bench_restate(
    args: argparse.Namespace, log_dir: Path, info: dict[str, object], peer_python: Path, *, http11: bool,
) -> tuple[list[Record], list[Missing]]:
    system = "restate-h1" if http11 else "restate-h2"
    phase_dir = log_dir / system
    phase_dir.mkdir(parents=True, exist_ok=True)
    out = phase_dir / "result.json"
    settings = {k: getattr(args, k) for k in ("duration", "warmup", "concurrency", "keys", "key_mode",
                                               "verify_keys", "scenarios")}
    # unshare -n: a new network namespace with only a (down) loopback; restate_ns brings lo up,
    # checks that nothing else is there, and only then starts the server.
    argv = ["unshare", "-n", "--", sys.executable, "-m", "benchmarks.peers.restate_ns", "--out", str(out),
            "--dir", str(phase_dir), "--binary", str(info["binary"]), "--peer-python", str(peer_python),
            "--settings", json.dumps(settings), *(["--http11"] if http11 else [])]
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    # Start-up (server, SDK, registration) plus each scenario with room for its drain and checks.
    budget = 120 + len(args.scenarios) * (args.warmup + args.duration + 60)
    proc = await asyncio.create_subprocess_exec(*argv, cwd=REPO_ROOT, env=env, start_new_session=True,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.wait_for(proc.wait(), timeout=budget)
    except TimeoutError:
        _stop(proc)
        await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled (Ctrl-C): the namespace's servers go too
            _stop(proc)
    result = msgspec.json.decode(out.read_bytes(), type=PeerResult) if out.exists() else \
        PeerResult(error=f"{system} phase wrote no result (exit {proc.returncode}); logs in {phase_dir}")
    if proc.returncode not in (0, None) and result.error is None:
        result.error = f"the {system} phase exited {proc.returncode}; logs in {phase_dir}"
    if result.error is None:
        return result.records, []
    print(f"\nFAILED: {system}: {result.error}\nlogs kept in {phase_dir}", file=sys.stderr)
    done = {r.scenario for r in result.records}
    reason = failure_reason(BenchError(result.error))
    return result.records, [Missing(s, system, "failed", reason) for s in args.scenarios if s not in done]


def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM: restate_ns stops its servers and writes what it has (it has 20 s), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    asyncio.get_running_loop().call_later(20, kill)


# --- DBOS -------------------------------------------------------------------------------------------


async def bench_dbos(
    args: argparse.Namespace, log_dir: Path, session: aiohttp.ClientSession, peer_python: Path,
) -> tuple[list[Record], list[Missing]]:
    phase_dir = log_dir / "dbos"
    phase_dir.mkdir(parents=True, exist_ok=True)
    db = phase_dir / "dbos.sqlite"
    records: list[Record] = []
    missing = [Missing(s, "dbos", "n/a", NO_KEYED_OBJECTS) for s in args.scenarios if SCENARIOS[s].verify_counter]
    todo = [s for s in args.scenarios if not SCENARIOS[s].verify_counter]
    if not todo:
        return records, missing
    procs = Procs(phase_dir)
    try:
        port = free_port()
        procs.start("dbos-app", [str(peer_python), "-m", "benchmarks.peers.dbos_app", "--port", str(port),
                                 "--db", str(db)])
        base = f"http://127.0.0.1:{port}"
        await wait_until("dbos_app /health", http_ok(session, f"{base}/health"), procs, timeout=60)

        async def count() -> int:
            return await asyncio.to_thread(_dbos_successes, db)

        for name in todo:
            check = completions_check(count, await count(), "workflows DBOS recorded as SUCCESS")
            records.append(await run_scenario(SCENARIOS[name], "dbos", base, procs, args, session,
                                              durability="fsync", check=check))
    finally:
        procs.close()
    return records, missing


def _dbos_successes(db: Path) -> int:
    """Workflows DBOS recorded as finished successfully (read-only; DBOS's writer may be active)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute("SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'").fetchone()[0]
