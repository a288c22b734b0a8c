"""Wall-clock milliseconds: what records, timers and deadlines are stamped with, and the one way
to run something at such an instant (``call_at_ms``), so that every wall-clock wait is in one place.

Tests may swap in a :class:`~sidecar.time_skipping.SkippingClock` (``sidecar serve --test-clock``),
which runs ahead of the wall clock by an offset that only grows; without one (production) each
function costs one ``is None`` test more than the bare wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .time_skipping import SkippingClock


class Cancellable(Protocol):
    def cancel(self) -> None: ...


#: The test clock in use, if any: set once at start-up by the process that serves (never in production).
_skipping: SkippingClock | None = None


def use_skipping_clock(clock: SkippingClock | None) -> None:
    """Have :func:`now_ms` and :func:`call_at_ms` follow ``clock`` (``None``: the wall clock again)."""
    global _skipping
    _skipping = clock


def now_ms() -> int:
    if _skipping is not None:
        return _skipping.now_ms()
    return time.time_ns() // 1_000_000


def offset_ms() -> int:
    """How far this sidecar's clock runs ahead of the wall clock: 0 but under a test clock. Handlers
    get it in each ``Start`` so that what they journal as "now" agrees with the sidecar."""
    return 0 if _skipping is None else _skipping.offset_ms


def call_at_ms(due_ms: int, callback: Callable[..., object], *args: object) -> Cancellable:
    """Call ``callback(*args)`` on the running loop once the clock reads ``due_ms`` (at once if past).
    Under a test clock, an advance past ``due_ms`` calls it at once."""
    if _skipping is not None:
        return _skipping.call_at_ms(due_ms, callback, *args)
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
