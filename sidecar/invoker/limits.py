"""Limit groups: slots that the steps naming a group take, sidecar-wide, held by one worker.

A group configured with ``concurrency = N`` has N slots: a step takes one before its first try
and gives it back when its ``Run`` entry arrives or its attempt ends. With ``rate = "C/period"``
at most C steps take a slot within any period. A step that finds none waits in the group's line
(first come, first served) and is handed the next free slot (``grant``).

Holders are named by worker, invocation and journal index, so a step that asks again (its next
try, or the next attempt of a parked invocation) keeps the slot it holds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
import msgspec

from ..cli.limits import LimitConfig, Rate, parse_rate
from ..clock import now_ms


class Holder(msgspec.Struct, frozen=True, array_like=True):
    """A step that holds or waits for a slot: its worker, its invocation, its journal index."""

    worker: int
    invocation_id: str
    step: int


class UnknownLimit(LookupError):
    """No limit group of that name is configured: the step fails terminally (400)."""

    @classmethod
    def of(cls, name: str, known: list[str]) -> UnknownLimit:
        configured = f"configured: {', '.join(known)}" if known else "none is configured"
        return cls(f"no limit group named {name[:200]!r} ({configured}): add [limits.{name[:200]}] "
                   "to the sidecar's configuration, or --limit")


class LimitView(msgspec.Struct, frozen=True):
    name: str
    concurrency: int | None
    rate: str | None
    in_use: int
    waiting: int


class _Group:
    __slots__ = ("name", "config", "rate", "holding", "starts", "line", "timer")

    def __init__(self, name: str, config: LimitConfig) -> None:
        self.name = name
        self.config = config
        self.rate: Rate | None = None if config.rate is None else parse_rate(config.rate)
        self.holding: set[Holder] = set()
        #: When each slot of the current period was taken (rate groups only).
        self.starts: deque[int] = deque()
        #: Waiting for a slot, in arrival order (a dict as an ordered set).
        self.line: dict[Holder, None] = {}
        self.timer: asyncio.TimerHandle | None = None

    def room_in_ms(self, now: int) -> int | None:
        """0 if a slot may be taken now; else how long until the rate allows one (None: only a
        release frees one)."""
        if self.config.concurrency is not None and len(self.holding) >= self.config.concurrency:
            return None
        if self.rate is None:
            return 0
        while self.starts and self.starts[0] <= now - self.rate.period_ms:
            self.starts.popleft()
        if len(self.starts) < self.rate.starts:
            return 0
        return self.starts[0] + self.rate.period_ms - now

    def take(self, holder: Holder, now: int) -> None:
        self.holding.add(holder)
        if self.rate is not None:
            self.starts.append(now)


class LimitBoard:
    """Every configured group's slots and line (the owning worker's). ``grant`` is told of a
    waiting holder that was given a slot; ``gauges`` of the counts in use and waiting."""

    def __init__(self, limits: Mapping[str, LimitConfig], grant: Callable[[Holder], None],
                 gauges: Callable[[str, int, int], None], clock: Callable[[], int] = now_ms) -> None:
        self._groups = {name: _Group(name, config) for name, config in limits.items()}
        self._grant = grant
        self._gauges = gauges
        self._clock = clock
        for name in self._groups:
            gauges(name, 0, 0)

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            raise UnknownLimit.of(name, sorted(self._groups))
        return group

    async def acquire(self, name: str, holder: Holder) -> bool:
        """Whether ``holder`` holds a slot of group ``name`` now; if not, it waits in line and
        ``grant`` is called when it does. ``UnknownLimit`` for a group not configured."""
        group = self._group(name)
        if holder in group.holding:
            return True
        if holder not in group.line:
            now = self._clock()
            if not group.line and group.room_in_ms(now) == 0:
                group.take(holder, now)
                self._count(group)
                return True
            group.line[holder] = None
            self._pump(group)
        return holder in group.holding

    def release(self, name: str, holder: Holder) -> None:
        """``holder`` gives its slot back, or leaves the line."""
        group = self._groups.get(name)
        if group is None:
            return
        group.holding.discard(holder)
        group.line.pop(holder, None)
        self._pump(group)

    def _pump(self, group: _Group) -> None:
        """Hand free slots to the line, in order; wake up when the rate allows the next."""
        if group.timer is not None:
            group.timer.cancel()
            group.timer = None
        granted = []
        while group.line:
            now = self._clock()
            wait = group.room_in_ms(now)
            if wait is None:
                break
            if wait > 0:
                group.timer = asyncio.get_running_loop().call_later(wait / 1000, self._pump, group)
                break
            holder = next(iter(group.line))
            del group.line[holder]
            group.take(holder, now)
            granted.append(holder)
        self._count(group)
        for holder in granted:
            self._grant(holder)

    def _count(self, group: _Group) -> None:
        self._gauges(group.name, len(group.holding), len(group.line))

    def views(self) -> list[LimitView]:
        return [LimitView(g.name, g.config.concurrency, g.config.rate, len(g.holding), len(g.line))
                for g in sorted(self._groups.values(), key=lambda g: g.name)]
