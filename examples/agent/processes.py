"""The demo's processes: vendors, the handler service and the sidecar, each killable with SIGKILL.

Each runs in a session of its own, so a kill takes its whole process group (the sidecar's
workers and writer with it), as a pod's death would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """One long-running command, started again after a kill with the same arguments."""

    def __init__(self, name: str, command: list[str], logs: Path, env: dict[str, str]) -> None:
        self.name = name
        self._command = command
        self._log = logs / f"{name}.log"
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                                             start_new_session=True)

    def kill(self) -> None:
        """SIGKILL, the whole process group, and reap it."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()
        self._process = None
        self.kills += 1

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()


async def wait_until_up(http: aiohttp.ClientSession, url: str, process: Process, deadline_s: float = 30.0) -> None:
    """Until ``url`` answers 200 (``process`` must not exit meanwhile)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.exited() is not None:
            raise RuntimeError(f"{process.name} exited with status {process.exited()}: see its log")
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{process.name} did not answer {url} within {deadline_s:g} s")


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
