"""Growth warnings: an invocation whose journal, or whose key's state, grows past a limit.

Agent loops that journal their whole context at every step bloat their histories until each
replay is slow and costly; an operator should hear of it before the disk or the bill does. The
first time an invocation's journal (the bytes of its payloads) passes ``warn_journal_bytes``, or
its key's state (the bytes of its values) passes ``warn_state_bytes`` through one of its writes,
the invocation gets a ``GrowthWarning`` in its record (its admin detail shows it), a ``warning``
event on its event stream, and ``sidecar_growth_warnings{kind}`` counts it. Nothing is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from handler_sdk.protocol import PAYLOAD_FIELDS, ClearAllState, ClearState, Entry, SetState

from ..metrics import Metrics
from ..store.records import GrowthWarning
from .live import Live

log = logging.getLogger(__name__)


def payload_bytes(entry: Entry) -> int:
    """What ``entry``'s payloads take."""
    total = 0
    for name in PAYLOAD_FIELDS.get(type(entry), ()):
        held = getattr(entry, name)
        if held:
            total += len(held)
    return total


class GrowthWatch:
    """Counts what each live invocation's journal and key state hold; warns once per kind."""

    def __init__(self, *, journal_limit: int, state_limit: int, metrics: Metrics,
                 on_warning: Callable[[str], None]) -> None:
        self._journal_limit = journal_limit
        self._state_limit = state_limit
        self._metrics = metrics
        #: The invocation has a new warning: its event stream's subscribers are woken.
        self._on_warning = on_warning

    def started(self, live: Live, state: dict[str, bytes] | None) -> None:
        """An attempt starts over ``live.journal`` and its key's ``state`` snapshot."""
        assert live.journal is not None
        live.journal_bytes = sum(payload_bytes(entry) for entry in live.journal)
        live.state_sizes = {} if state is None else {name: len(value) for name, value in state.items()}
        live.state_bytes = sum(live.state_sizes.values())

    def appended(self, live: Live, index: int, entry: Entry, size: int) -> None:
        """Entry ``index``, whose payloads take ``size`` bytes, was journaled."""
        live.journal_bytes += size
        if live.journal_bytes > self._journal_limit:
            self._warn(live, "journal", index, live.journal_bytes, self._journal_limit)
        if type(entry) is SetState:
            live.state_bytes += len(entry.value) - live.state_sizes.get(entry.name, 0)
            live.state_sizes[entry.name] = len(entry.value)
            if live.state_bytes > self._state_limit:
                self._warn(live, "state", index, live.state_bytes, self._state_limit)
        elif type(entry) is ClearState:
            live.state_bytes -= live.state_sizes.pop(entry.name, 0)
        elif type(entry) is ClearAllState:
            live.state_sizes, live.state_bytes = {}, 0

    def _warn(self, live: Live, kind: str, index: int, size: int, limit: int) -> None:
        record = live.record
        if any(w.kind == kind for w in record.warnings):
            return
        what = "its journal" if kind == "journal" else f"the state of key {record.key!r}"
        message = (f"{what} holds {size} bytes, past warn_{kind}_bytes ({limit}): each replay sends it "
                   "again; keep large values elsewhere and journal references to them")
        record.warnings = [*record.warnings, GrowthWarning(kind=kind, index=index, size=size, limit=limit,
                                                           message=message)]
        self._metrics.growth_warnings.labels(kind).inc()
        log.warning("%s: %s", record.id, message, extra={"invocation_id": record.id})
        self._on_warning(record.id)
