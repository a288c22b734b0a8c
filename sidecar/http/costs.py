"""``GET /costs``: what journaled steps cost, summed over the invocations that match a filter.

Each step's cost is filed in the ``costs`` database in the batch that journals its ``Run`` entry
(``Changes.append_entry``), so the store alone is exact: a step counts once it is durable, and
once, since a replayed step is never journaled again. Every worker writes to the same store, so
worker 0 (where the admin API runs) answers without asking the others. The rows are read a bounded
page at a time (``Store.read_costs``), giving the event loop back between pages, so that a sum over
many rows never holds up the ingress that shares the loop. The pages are not one snapshot: a step
journaled, or an invocation purged, while they are read may count or not.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone

import msgspec
from multidict import MultiMapping

from handler_sdk.protocol import Entry, Run

from ..store import Store
from ..store.lmdb_store import COST_BUDGET, CostFilter
from .errors import HTTPProblem, refuse_long_identifiers

_PARAMETERS = ("service", "handler", "key", "step", "since")


class CostSums(msgspec.Struct):
    """The answer: the total, how many invocations spent it, and the total of each step name."""

    total: float
    invocations: int
    by_step: dict[str, float]


def parse_time(text: str) -> int:
    """Epoch milliseconds from ``text``: an ISO 8601 time (UTC unless it says otherwise) or epoch
    ms; :class:`HTTPProblem` 400 for anything else."""
    if text.isdigit() and text.isascii():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return math.floor(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise HTTPProblem(400, f"since must be an ISO 8601 time (2025-01-31T09:00:00Z) or epoch milliseconds, "
                               f"not {text[:60]!r}") from None


def parse_costs_query(query: MultiMapping[str]) -> CostFilter:
    """The filter a ``GET /costs`` query asks for; 400 naming what is wrong with it."""
    for name in query:
        if name not in _PARAMETERS:
            raise HTTPProblem(400, f"unknown parameter {name[:60]!r}; /costs takes {', '.join(_PARAMETERS)}")
        if len(query.getall(name)) > 1:
            raise HTTPProblem(400, f"{name} given more than once")
    given = {name: query.get(name) or None for name in _PARAMETERS}
    refuse_long_identifiers(("service name", given["service"]), ("handler name", given["handler"]),
                            ("object key", given["key"]))
    if given["service"] is None:
        for name in ("key", "handler"):
            if given[name] is not None:
                raise HTTPProblem(400, f"{name} needs service: it names a {name} of one service")
    since = given["since"]
    return CostFilter(service=given["service"], handler=given["handler"], key=given["key"], step=given["step"],
                      since_ms=None if since is None else parse_time(since))


class ExactSum:
    """A running sum of floats with no rounding on the way (Shewchuk's non-overlapping partials,
    which ``math.fsum`` keeps inside), rounded once when read: many small costs add up as they
    were written (ten 0.1 are 1.0), in any order and across any number of pages."""

    __slots__ = ("_partials",)

    def __init__(self) -> None:
        self._partials: list[float] = []

    def add(self, x: float) -> None:
        partials, kept = self._partials, 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low:
                partials[kept] = low
                kept += 1
            x = high
        partials[kept:] = [x]

    @property
    def value(self) -> float:
        return math.fsum(self._partials)


async def sum_costs(store: Store, wanted: CostFilter, *, budget: int = COST_BUDGET) -> CostSums:
    """Sum the matching rows, page by page."""
    total = ExactSum()
    by_step: dict[str, ExactSum] = {}
    invocations = 0
    last_id: str | None = None
    start: bytes | None = b""
    while start is not None:
        page = store.read_costs(wanted, start=start, budget=budget)
        for row in page.rows:
            if row.invocation_id != last_id:  # an invocation's rows come together
                invocations, last_id = invocations + 1, row.invocation_id
            total.add(row.cost)
            step = by_step.get(row.step)
            if step is None:
                step = by_step[row.step] = ExactSum()
            step.add(row.cost)
        start = page.next
        if start is not None:
            await asyncio.sleep(0)  # let the ingress in between pages
    return CostSums(total=total.value, invocations=invocations,
                    by_step={name: step.value for name, step in sorted(by_step.items())})


def journal_cost(journal: list[Entry]) -> float | None:
    """What an invocation's journal says it spent: the sum of its steps' costs (``None``: no step
    reported one). Entries a restart copied count here, where they were replayed, and in
    ``GET /costs`` only for the invocation that spent them."""
    costs = [e.cost for e in journal if type(e) is Run and e.cost is not None]
    return math.fsum(costs) if costs else None
