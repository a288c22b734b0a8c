"""An invocation as a test reads it: ``GET /invocations/{id}`` of the admin API, typed."""

from __future__ import annotations

import datetime
import typing
from typing import Any, Literal

import msgspec

from ..protocol import Failure

Status = Literal["pending", "running", "suspended", "backing-off", "paused", "completed", "failed", "cancelled",
                 "killed"]
STATUSES: frozenset[str] = frozenset(typing.get_args(Status))
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "killed"})


class JournalEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One journal entry. ``kind`` is the entry's kind (``Input``, ``Run``, ``Sleep``, ``Call``,
    ``SetState``, ``Output``, ...); ``name`` a step's or state's name; ``value`` its payload,
    decoded from JSON; ``done`` whether a completable entry (a timer, an awakeable, a call) is
    complete. ``fields`` holds every field the admin API shows for it (``wake_at_ms``, ``cost``...)."""

    index: int
    kind: str
    name: str = ""
    value: Any = None
    failure: Failure | None = None
    done: bool = False
    fields: dict[str, Any] = {}


class Invocation(msgspec.Struct, frozen=True, kw_only=True):
    """An invocation's status, why it is there (``reason``), its outcome and its whole journal.

    ``output`` and the entries' values are JSON-decoded (``msgspec.convert(inv.output, T)`` makes
    them typed); ``failure`` is set once it failed (its ``code`` and ``message``)."""

    id: str
    target: str
    service: str
    handler: str
    key: str | None = None
    status: Status
    reason: str | None = None
    attempts: int = 0
    failures: int = 0
    last_error: str | None = None
    idempotency_key: str | None = None
    created_at: datetime.datetime | None = None
    modified_at: datetime.datetime | None = None
    start_at: datetime.datetime | None = None
    next_retry_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    input: Any = None
    output: Any = None
    failure: Failure | None = None
    journal: list[JournalEntry] = []

    @property
    def finished(self) -> bool:
        """Completed, failed, cancelled or killed: nothing more will happen to it."""
        return self.status in FINISHED

    @property
    def sleeping(self) -> bool:
        """It has journaled a ``ctx.sleep`` whose timer has not fired yet."""
        return any(entry.kind == "Sleep" and not entry.done for entry in self.journal)

    def entries(self, kind: str, name: str | None = None) -> list[JournalEntry]:
        """The journal's entries of ``kind`` (and ``name``, if given), in order."""
        return [e for e in self.journal if e.kind == kind and (name is None or e.name == name)]


def decode_invocation(body: bytes) -> Invocation:
    """The admin API's detail (fields it adds later are ignored); each entry keeps all of its own."""
    shown = msgspec.json.decode(body)
    for entry in shown.get("journal", []):
        entry["fields"] = dict(entry)
        entry["name"] = entry.get("name") or ""
        entry["done"] = bool(entry.get("done", False))
    return msgspec.convert(shown, Invocation)
