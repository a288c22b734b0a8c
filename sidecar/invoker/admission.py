"""Admission: whether a client's new invocation may join.

A key's line and a worker's invocations live in memory until they finish. Past a limit, a new
one is refused before anything is written, with a status the client can back off from (429 for
one full key, 503 for a full worker), instead of answering ever later and running out of memory.
Invocations that handlers start (calls, sends) are never refused: their callers already run.
"""

from __future__ import annotations

from ..cli.config import Settings
from ..store import InvocationRecord


class Overloaded(Exception):
    """A new invocation was refused. ``whole_worker``: the worker is full (503), not one key (429)."""

    def __init__(self, message: str, *, whole_worker: bool) -> None:
        super().__init__(message)
        self.whole_worker = whole_worker


def admit(record: InvocationRecord, settings: Settings, *, unfinished: int, waiting_on_key: int) -> None:
    """Raise :class:`Overloaded` if ``record`` may not join: ``unfinished`` invocations held by
    this worker, ``waiting_on_key`` in line on its key (for an exclusive one starting now)."""
    if settings.max_invocations and unfinished >= settings.max_invocations:
        raise Overloaded(f"this worker holds {unfinished} unfinished invocations, its limit "
                         f"(max_invocations); retry later", whole_worker=True)
    if settings.max_queue_per_key and waiting_on_key >= settings.max_queue_per_key:
        raise Overloaded(f"{record.service}/{record.key} has {waiting_on_key} invocations waiting in line, "
                         f"its limit (max_queue_per_key); retry later", whole_worker=False)
