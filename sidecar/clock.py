"""Wall-clock milliseconds: what records, timers and deadlines are stamped with, and the one way
to run something at such an instant (``call_at_ms``), so that every wall-clock wait is in one place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timezone


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def call_at_ms(due_ms: int, callback: Callable[..., object], *args: object) -> asyncio.TimerHandle:
    """Call ``callback(*args)`` on the running loop once the wall clock reads ``due_ms`` (at once if past)."""
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + max(0.0, (due_ms - now_ms()) / 1000), callback, *args)


def iso_ms(ms: int) -> str:
    """``ms`` since the epoch as ISO 8601 in UTC with milliseconds, as people and logs read it."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class InboxClock:
    """Sequence numbers for a worker's inboxes: a hybrid clock, ``max(now in µs, last + 1)``.

    Strictly increasing within a process. Across restarts it needs no stored counter: it runs
    ahead of the wall clock only while more than one invocation a microsecond joins (each one is
    a store commit, so a lead of more than a few microseconds never builds up), and a restart
    takes far longer than that; recovery also raises ``last`` to the highest seq it finds in the
    inboxes it takes over (``observe``), so a wall clock stepped back does not put new arrivals
    ahead of the ones already waiting.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(time.time_ns() // 1000, self._last + 1)
        return self._last

    def observe(self, seq: int) -> None:
        self._last = max(self._last, seq)
