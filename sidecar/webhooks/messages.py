"""What a webhook says: which event an invocation's new status is, and the JSON body sent.

One message per status a user waits on: each final status, and ``paused``. A status reached
because the budget ran out (a pause the handler asked for, or the ``BudgetExceeded`` failure)
is ``budget_exceeded`` instead, so that a receiver can tell money from bugs.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
from yarl import URL

from handler_sdk._spending import BUDGET_EXCEEDED

from .signing import parse_secret

if TYPE_CHECKING:
    from ..store.records import InvocationRecord

#: The event names ``--webhook-events`` takes; each is sent as ``invocation.NAME``.
EVENTS = ("completed", "failed", "paused", "killed", "cancelled", "budget_exceeded")
TYPE_PREFIX = "invocation."


class WebhookBody(msgspec.Struct, kw_only=True):
    """The JSON a receiver gets (keys in this order; ``reason`` and ``cost`` may be null)."""

    type: str
    invocation_id: str
    target: str
    status: str
    #: Why: a failure's message, a pause's reason; null for a completed invocation.
    reason: str | None
    #: What its journaled steps reported they cost (null: none reported one).
    cost: float | None
    #: When it reached this status (epoch ms).
    at_ms: int


_body_encoder = msgspec.json.Encoder()


def event_of(record: InvocationRecord) -> str | None:
    """The event ``record``'s status is (``None``: one no webhook tells of)."""
    if record.status == "paused":
        return "budget_exceeded" if (record.pause_reason or "").startswith(BUDGET_EXCEEDED) else "paused"
    if record.status == "failed" and record.failure is not None and record.failure.code == 402 \
            and record.failure.message.startswith(BUDGET_EXCEEDED):
        return "budget_exceeded"
    return record.status if record.finished else None


def reason_of(record: InvocationRecord) -> str | None:
    if record.status == "paused":
        return record.pause_reason or f"paused after {record.attempts} attempts: {record.last_error}"
    return record.failure.message if record.failure is not None else None


def body_of(event: str, record: InvocationRecord, cost: float | None, at_ms: int) -> bytes:
    return _body_encoder.encode(WebhookBody(
        type=TYPE_PREFIX + event, invocation_id=record.id, target=record.target, status=record.status,
        reason=reason_of(record), cost=cost, at_ms=at_ms))


def new_message_id() -> str:
    """A ``webhook-id``: made once per message, stored with it, sent unchanged on every redelivery."""
    return "msg_" + secrets.token_hex(12)


def parse_events(names: Sequence[str]) -> frozenset[str]:
    """``paused``, ``invocation.paused``, ... as event names; all of them for none."""
    events = {name.strip().removeprefix(TYPE_PREFIX) for name in names if name.strip()}
    unknown = sorted(events - set(EVENTS))
    if unknown:
        raise ValueError(f"unknown webhook event {unknown[0][:60]!r}: choose from {', '.join(EVENTS)}")
    return frozenset(events) if events else frozenset(EVENTS)


def url_problem(text: str) -> str | None:
    """What keeps ``text`` from being a receiver's URL, if anything."""
    try:
        url = URL(text)
    except (TypeError, ValueError) as exc:
        return f"webhook URL {text[:100]!r} is not a URL: {exc}"
    if url.scheme not in ("http", "https") or not url.host:
        return f"webhook URL {text[:100]!r} must be http:// or https:// with a host"
    return None


def webhook_problem(urls: Sequence[str], events: Sequence[str], secret: str | None) -> str | None:
    """What is wrong with the webhook settings, if anything (one sentence)."""
    for url in urls:
        if (problem := url_problem(url)) is not None:
            return problem
    try:
        parse_events(events)
        if secret is not None:
            parse_secret(secret)
    except ValueError as exc:
        return str(exc)
    return None
