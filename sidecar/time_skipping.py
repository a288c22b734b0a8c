"""A clock that tests move forward (``sidecar serve --test-clock``): time skipping.

It reads the wall clock plus an offset that ``POST /test/clock`` raises. Every wall-clock wait
(``clock.call_at_ms``: durable timers, delayed starts, retry back-offs, deadlines) is kept here
while pending, so that an advance re-arms each one against the new time: what is due then runs at
once, in the order of due times, as if that much time had passed. The offset is written to the
data directory before anything runs on it, so a restarted sidecar goes on from the time tests
moved it to, never back before what it has stamped.

Test-only: production never passes the flag, and without it none of this is loaded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

#: The offset's file in the data directory.
OFFSET_FILE = "test-clock.json"


class ClockFile(msgspec.Struct, forbid_unknown_fields=True):
    offset_ms: int


class ClockFileError(Exception):
    """The data directory's clock file cannot be read: the message says which and why."""


class SkippableWait:
    """One pending ``call_at_ms``, re-armed on every advance until it runs or is cancelled."""

    __slots__ = ("due_ms", "_callback", "_args", "_clock", "_loop", "_handle")

    def __init__(self, clock: SkippingClock, due_ms: int, callback: Callable[..., object],
                 args: tuple[object, ...]) -> None:
        self.due_ms = due_ms
        self._callback = callback
        self._args = args
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.Handle = self._arm()

    def _arm(self) -> asyncio.Handle:
        delay = (self.due_ms - self._clock.now_ms()) / 1000
        if delay <= 0:
            return self._loop.call_soon(self._run)
        return self._loop.call_at(self._loop.time() + delay, self._run)

    def rearm(self) -> None:
        self._handle.cancel()
        self._handle = self._arm()

    def cancel(self) -> None:
        self._handle.cancel()
        self._clock.waits.discard(self)

    def _run(self) -> None:
        self._clock.waits.discard(self)
        self._callback(*self._args)


class SkippingClock:
    """The wall clock plus ``offset_ms``, which only an advance changes (and only forward)."""

    def __init__(self, path: Path, offset_ms: int = 0) -> None:
        self._path = path
        self.offset_ms = offset_ms
        #: The pending waits, each re-armed by an advance.
        self.waits: set[SkippableWait] = set()
        self._advancing = asyncio.Lock()

    @classmethod
    def load(cls, data_dir: Path) -> SkippingClock:
        """The clock of ``data_dir``: the offset that tests advanced it to, 0 for a new one."""
        path = data_dir / OFFSET_FILE
        try:
            saved = msgspec.json.decode(path.read_bytes(), type=ClockFile)
        except FileNotFoundError:
            return cls(path)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ClockFileError(f"cannot read the test clock's offset from {path}: {exc}") from None
        return cls(path, saved.offset_ms)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def call_at_ms(self, due_ms: int, callback: Callable[..., object], *args: object) -> SkippableWait:
        wait = SkippableWait(self, due_ms, callback, args)
        self.waits.add(wait)
        return wait

    async def advance(self, ms: int) -> int:
        """Move the clock ``ms`` forward; the new now. The offset is on disk before any wait runs
        on it (a crash right after must not take the sidecar back before what those waits stamp)."""
        if ms < 0:
            raise ValueError("the clock only moves forward")
        async with self._advancing:  # one write at a time, so the file ends with the last offset
            offset = self.offset_ms + ms
            await asyncio.to_thread(self._save, offset)
            self.offset_ms = offset
            for wait in sorted(self.waits, key=lambda w: w.due_ms):  # call_soon keeps this order
                wait.rearm()
        return self.now_ms()

    def _save(self, offset_ms: int) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.json.encode(ClockFile(offset_ms)))
        os.replace(temporary, self._path)  # never half a file, whenever the process dies
