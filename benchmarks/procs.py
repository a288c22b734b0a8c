"""Process plumbing for ``benchmarks.run``: start, wait for, measure and stop server processes.

CPU time is read from ``/proc/PID/stat`` (utime + stime, in clock ticks) for a process and every
descendant alive at the time of reading, so a server that forks workers is charged for them.
"""

from __future__ import annotations

import argparse

import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """The benchmark could not run as asked (a process died, a server never became ready)."""


def free_port() -> int:
    """A port the kernel just said is free on loopback (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(entry)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """utime + stime of ``pid`` (and of its live descendants when ``tree``), in seconds."""
    pids = [pid]
    if tree:
        children = _children_map()
        stack = [pid]
        while stack:
            for child in children.get(stack.pop(), []):
                pids.append(child)
                stack.append(child)
    ticks = 0
    for p in pids:
        if (fields := _stat_fields(p)) is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


class Proc:
    """One server process we started, with its log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as log:
            # A new session, so that stopping it also stops anything it forked, and nothing else.
            self.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT, env=env, start_new_session=True,
            )
        self.pid = self.popen.pid

    def check_alive(self) -> None:
        if (rc := self.popen.poll()) is not None:
            raise BenchError(f"{self.name} exited with code {rc} (log: {self.log}):\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (the leader or anything it forked) is killed outright.
        self._signal(signal.SIGKILL)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)  # the group is the session we created for this process
        except (ProcessLookupError, PermissionError):
            pass


class Procs:
    """The processes of one benchmark phase; ``close()`` stops all of them, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self.env = dict(os.environ)
        # The handler services import ``benchmarks`` and ``examples`` from the repository root.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        self.env["PYTHONUNBUFFERED"] = "1"

    def start(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.log_dir, self.env)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            proc.check_alive()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def cpu(self) -> dict[str, float]:
        return {p.name: cpu_seconds(p.pid) for p in self.procs}


async def wait_until(
    what: str, probe: Callable[[], Awaitable[bool]], procs: Procs, *, timeout: float = 30.0,
    interval: float = 0.05,
) -> None:
    """Poll ``probe`` until it returns True, failing fast if a process died, or at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error = ""
    while True:
        procs.check_alive()
        try:
            if await probe():
                return
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            last_error = f" (last error: {type(exc).__name__}: {exc})"
        if loop.time() > deadline:
            logs = ", ".join(str(p.log) for p in procs.procs)
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}{last_error}; logs: {logs}")
        await asyncio.sleep(interval)


def http_ok(session: aiohttp.ClientSession, url: str, *, method: str = "GET") -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        async with session.request(method, url) as resp:
            await resp.read()
            return 200 <= resp.status < 300

    return probe


def machine_info() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git": _git_revision(),
        # Other load on the machine skews every number: say how busy it was when the run began.
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    head = rev.stdout.strip() or "no commit"
    return head + ("+dirty" if dirty.stdout.strip() else "")


def sidecar_executable() -> list[str]:
    """The venv's ``sidecar`` console script, next to the running interpreter."""
    script = Path(sys.executable).parent / "sidecar"
    if script.exists():
        return [str(script)]
    raise BenchError(f"no 'sidecar' console script next to {sys.executable}: install the project "
                     "into this environment (pip install -e ./sdk -e .)")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json PATH`` and ``--keep``, which every benchmark takes."""
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")


def write_json(path: str | None, report: object) -> None:
    """``--json PATH``: the report's records, formatted, for tools and later comparison."""
    import msgspec

    if path:
        Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        print(f"\nJSON: {path}")


def leave_tmp(tmp: Path, keep: bool) -> None:
    """Remove the run's temp dir (logs, data) unless asked to keep it."""
    import shutil

    if keep:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def busy_warning(machine: dict[str, object]) -> str:
    """A warning when other work was using the CPUs as the run began (empty when quiet)."""
    try:
        load = float(str(machine["loadavg_at_start"]).split()[0])
        cores = int(machine["cores"])  # type: ignore[call-overload]
    except (KeyError, ValueError, TypeError):
        return ""
    if load <= 0.25 * cores:
        return ""
    return (f"the 1-minute load average was {load} on {cores} cores before this run started: other work "
            "shared the CPUs, so these numbers understate what each system can do; rerun on a quiet machine")


def run_cli(amain: Callable[[Any, list[str]], Awaitable[int]], parse_args: Callable[[list[str]], Any],
            argv: list[str] | None) -> int:
    """A benchmark's ``main``: parse, run on uvloop, and stop quietly on Ctrl-C (every phase
    stops its servers in a ``finally``)."""
    import uvloop

    argv = sys.argv[1:] if argv is None else argv
    try:
        return uvloop.run(amain(parse_args(argv), argv))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
