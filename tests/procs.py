"""Real processes for end-to-end tests: the sidecar, handler services and a side-effect sink.

Everything binds to loopback on free ports, logs to files under the test's tmp dir (shown when a
test fails), and waits on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp

from handler_sdk.testing._ports import free_port as free_port  # the harness's claims, shared

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns a truthy value (returned) or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = 0.01
    while True:
        try:
            result = await check()
            if result:
                return result
        except (aiohttp.ClientError, OSError, AssertionError, asyncio.TimeoutError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last error: {last_error!r}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.2)


class Process:
    """A child process with its output in a log file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None, *,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self._cwd, env=self._env)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up, as in a crash."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if not self.running:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def children(parent_pid: int, marker: bytes) -> list[int]:
    """PIDs of ``parent_pid``'s children whose command line holds ``marker`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == parent_pid and marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def sidecar_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar.cli.main", *args]
