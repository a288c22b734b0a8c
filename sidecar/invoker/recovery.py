"""Start-up: take back every unfinished invocation of this worker's partitions from the store."""

from __future__ import annotations

import logging
from typing import Protocol

from ..clock import now_ms
from ..process.partitions import PartitionMap
from ..store import Store
from .live import Live
from .table import InvocationTable

log = logging.getLogger(__name__)

#: Recovery logs a line for each of this many invocations, then only their count.
_RECOVERIES_SHOWN = 100


class Readmission(Protocol):
    def readmit(self, live: Live, now: int) -> None: ...


def recover(store: Store, table: InvocationTable, partitions: PartitionMap, lifecycle: Readmission) -> None:
    """Re-admit every unfinished invocation, per key in arrival order, as the store has it."""
    now = now_ms()
    records = [store.get_invocation(i) for i in store.scan_inbox() if partitions.owns_invocation(i)]
    for record in records:
        if record is not None:
            table.inbox_clock.observe(record.inbox_seq)
    unfinished = [r for r in records if r is not None and not r.finished]
    # An invocation that already started holds its key, even if one that arrived earlier
    # (a delayed send now due) is also waiting: admit the holders first. An attempt's start is
    # not written (only its failure, suspension or end is): one that journaled a step started.
    started = {r.id for r in unfinished if r.attempts > 0 or store.has_entry(r.id, 1)}
    in_order = [r for r in unfinished if r.id in started] + [r for r in unfinished if r.id not in started]
    for shown, record in enumerate(in_order):
        if shown < _RECOVERIES_SHOWN:
            log.info("%s recovered: %s after %d attempts", record.id, record.status, record.attempts,
                     extra={"invocation_id": record.id})
        lifecycle.readmit(Live(record), now)
    if table.active:
        count = len(table.active)
        log.info("recovered %d unfinished invocations%s", count,
                 f" ({count - _RECOVERIES_SHOWN} not shown one by one)" if count > _RECOVERIES_SHOWN else "")
