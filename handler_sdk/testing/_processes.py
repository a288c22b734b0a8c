"""The harness's child processes: each one's output in a log file, stopped politely or SIGKILLed,
and waited for until it serves (or until it is seen to have died, with its log as the reason)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp

from ._errors import HarnessError

#: How much of a log an error shows.
LOG_TAIL_CHARS = 4000


class ChildProcess:
    """One child: started again with the same command line each time (same ports, same data)."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self._args = list(args)
        self.log_path = log_path
        self._env = dict(env)
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self._cwd, env=self._env)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def kill(self) -> None:
        """SIGKILL, as a crash: no clean-up runs. Returns once the process is gone."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)

    async def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            await self.kill()

    def kill_now(self) -> None:
        """As :meth:`kill`, for a teardown that has no event loop."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    async def until_serving(self, check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
        """Poll ``check`` until it is true; a :class:`HarnessError` with this process's log if the
        process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        last: BaseException | None = None
        while True:
            try:
                if await check():
                    return
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                last = exc
            if not self.running:
                status = self._proc.returncode if self._proc is not None else None
                raise HarnessError(f"the {self.name} exited (status {status}) before {what}; its log "
                                   f"({self.log_path}) ends:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"the {self.name} did not get to {what} within {timeout:g} s (last error: "
                                   f"{last!r}); its log ({self.log_path}) ends:\n{self.log_tail()}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)
