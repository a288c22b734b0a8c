"""Invocation deadlines: past its ``deadline_ms`` (its total timeout, waits included), an
invocation ends failed with 408, wherever it is."""

from __future__ import annotations

from collections.abc import Callable

from handler_sdk.protocol import Failure

from ..clock import call_at_ms
from .live import Live
from .table import InvocationTable


class Deadlines:
    def __init__(self, table: InvocationTable, terminate: Callable[[Live, str, Failure], None]) -> None:
        self._table = table
        #: Ends an invocation now (the lifecycle's).
        self._terminate = terminate

    def arm(self, live: Live) -> None:
        assert live.record.deadline_ms is not None
        call_at_ms(live.record.deadline_ms, self._passed, live)

    def _passed(self, live: Live) -> None:
        record = live.record
        if record.finished or self._table.active.get(record.id) is not live:
            return
        total_s = ((record.deadline_ms or 0) - record.created_ms) / 1000
        self._terminate(live, "failed", Failure(408, f"invocation timed out after {total_s:g} s (waits included)"))
