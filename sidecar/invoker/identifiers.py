"""Identifiers in a handler's journal entries: one over the limit fails the attempt that sent it
(our SDK refuses it at the call site already), before any write batch could carry it."""

from __future__ import annotations

from handler_sdk.protocol import (
    Awakeable, Call, ClearState, CompleteAwakeable, CompletePromise, Entry, GetPromise, GetState, PeekPromise, Send,
    SetState, identifier_problem,
)

_NAMED: dict[type, str] = {
    GetState: "state name", SetState: "state name", ClearState: "state name",
    GetPromise: "promise name", PeekPromise: "promise name", CompletePromise: "promise name",
}


def entry_identifier_problem(entry: Entry) -> str | None:
    """Why ``entry`` names something it may not (an identifier over the limit), or ``None``."""
    kind = type(entry)
    named = _NAMED.get(kind)
    if named is not None:
        return identifier_problem(named, entry.name)  # type: ignore[union-attr]
    if kind is Call or kind is Send:
        call: Call | Send = entry  # type: ignore[assignment]
        return (identifier_problem("object key", call.key or "") or identifier_problem("service name", call.service)
                or identifier_problem("handler name", call.handler))
    if kind is Awakeable or kind is CompleteAwakeable:
        return identifier_problem("awakeable ID", entry.id)  # type: ignore[union-attr]
    return None
