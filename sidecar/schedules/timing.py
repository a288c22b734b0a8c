"""When a schedule fires: its fire times, and which of the missed ones to make up for.

Pure functions of a schedule's spec and instants (epoch ms), so that every process, before and
after a restart, computes the same fire times: a fire time is part of its firing's idempotency
key. Cron expressions are croniter's (five fields, or an ``@`` alias), read in an IANA time
zone (``zoneinfo``); croniter decides the daylight-saving cases: a time that a spring-forward
skips fires at the first instant after the gap (02:30 -> 03:00), and a time in the hour an
autumn change repeats fires in both (once at each offset), since both are that wall-clock time.
An interval (``every``) fires at ``anchor + k * interval``, k >= 1, the anchor being when the
schedule was set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import msgspec
from croniter import croniter

from ..store.records import CatchUp

#: ``catch_up = "all"`` makes up for at most this many missed firings, the latest ones.
CATCH_UP_LIMIT = 100
#: Missed firings are counted up to this many (a cron schedule's are found one by one).
COUNT_LIMIT = 1000

#: croniter's random (``R``) and hashed (``H``) fields: fire times that are not a function of
#: the expression alone would differ after a restart, and with them the idempotency keys.
_UNSTABLE_FIELD = re.compile(r"\b[RH]\b", re.IGNORECASE)


class Timing(Protocol):
    def next_after(self, after_ms: int) -> int | None:
        """The first fire time later than ``after_ms`` (None: there is none)."""

    def back_from(self, until_ms: int) -> Iterator[int]:
        """Fire times at or before ``until_ms``, latest first."""


class Every(msgspec.Struct, frozen=True):
    anchor_ms: int
    interval_ms: int

    def next_after(self, after_ms: int) -> int | None:
        steps = max(1, (after_ms - self.anchor_ms) // self.interval_ms + 1)
        return self.anchor_ms + steps * self.interval_ms

    def back_from(self, until_ms: int) -> Iterator[int]:
        steps = (until_ms - self.anchor_ms) // self.interval_ms
        while steps >= 1:
            yield self.anchor_ms + steps * self.interval_ms
            steps -= 1


class Cron(msgspec.Struct, frozen=True):
    expression: str
    timezone: str

    def _iterator(self, start_ms: int) -> croniter[float]:
        zone = ZoneInfo(self.timezone)
        return croniter(self.expression, datetime.fromtimestamp(start_ms / 1000, tz=zone), ret_type=float)

    def next_after(self, after_ms: int) -> int | None:
        iterator = self._iterator(after_ms)
        try:
            while (fire_ms := round(iterator.get_next() * 1000)) <= after_ms:
                pass  # croniter works in seconds: step past an instant within the same one
        except ValueError:  # CroniterBadDateError: it never matches again
            return None
        return fire_ms

    def back_from(self, until_ms: int) -> Iterator[int]:
        iterator = self._iterator(until_ms + 1)
        while True:
            try:
                fire_ms = round(iterator.get_prev() * 1000)
            except ValueError:
                return
            if fire_ms <= until_ms:
                yield fire_ms


def cron_problem(expression: str, timezone: str) -> str | None:
    """Why ``expression`` in ``timezone`` cannot be a schedule, or None."""
    fields = expression.split()
    if not (expression.startswith("@") and len(fields) == 1) and len(fields) != 5:
        return (f"cron {expression[:200]!r}: expected five fields (minute hour day-of-month month day-of-week) "
                "or an alias such as @daily")
    if _UNSTABLE_FIELD.search(expression):
        return f"cron {expression[:200]!r}: random (R) and hashed (H) fields are not supported"
    try:
        first = Cron(expression, timezone).next_after(0)
    except Exception as exc:  # croniter's own refusal: its exceptions vary with what it trips on
        return f"cron {expression[:200]!r}: {exc}"
    return f"cron {expression[:200]!r} never fires" if first is None else None


def due(timing: Timing, first_ms: int, now_ms: int, keep: int) -> tuple[list[int], int]:
    """The fire times from ``first_ms`` to ``now_ms`` (both included): the latest ``keep`` of
    them, oldest first, and how many there are (counted up to :data:`COUNT_LIMIT`)."""
    latest: list[int] = []
    count = 0
    for fire_ms in timing.back_from(now_ms):
        if fire_ms < first_ms or count >= COUNT_LIMIT:
            break
        count += 1
        if len(latest) < keep:
            latest.append(fire_ms)
    latest.reverse()
    return latest, count


class Plan(msgspec.Struct, frozen=True):
    """What to do about the fire times that are due: fire ``fire`` (oldest first); ``due``
    were due (counted up to :data:`COUNT_LIMIT`), of which ``len(fire)`` are made."""

    fire: list[int]
    due: int

    @property
    def missed(self) -> int:
        return self.due - len(self.fire)


def plan(timing: Timing, policy: CatchUp, first_ms: int, now_ms: int, *, on_time: bool) -> Plan:
    """Which of the fire times from ``first_ms`` (the first not yet handled) to ``now_ms`` to
    make. ``on_time``: the timer armed for the latest of them has just gone off, so that one is
    a regular firing, and only those before it were missed; otherwise (the sidecar starting)
    every one of them was. The policy then decides about the missed ones: ``all`` makes up for
    each (the latest :data:`CATCH_UP_LIMIT`), ``one`` for the missed period once (the latest
    fire time, which a regular firing, when there is one, already is), ``none`` for none."""
    keep = CATCH_UP_LIMIT if policy == "all" else 1
    latest, count = due(timing, first_ms, now_ms, keep)
    if not latest:
        return Plan([], 0)
    if policy == "none" and not on_time:
        return Plan([], count)
    if policy == "none":
        return Plan(latest[-1:], count)
    return Plan(latest, count)
