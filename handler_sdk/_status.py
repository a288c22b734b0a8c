"""Classify a vendor's HTTP answer in one line: retry it, or give up on it.

Works on aiohttp's ``ClientResponse`` and httpx's ``Response`` alike by reading only what both
have (a status, headers, a URL), so the SDK depends on neither.
"""

from __future__ import annotations

import datetime
import email.utils
from typing import Any

from .errors import RetryableError, TerminalError

#: Answers that a later try may get right: a timeout, a conflict, too early, too many, the server.
RETRYABLE = frozenset({408, 409, 425, 429})


def raise_for_status(response: Any, cost: float | None = None) -> None:
    """Return if ``response`` succeeded; else raise what a step should do about it.

    ``RetryableError`` for 408, 409, 425, 429 and every 5xx, its ``retry_after`` taken from the
    response's ``Retry-After`` (seconds or an HTTP date); ``TerminalError`` with the status as
    its code for every other 4xx (400, 401, 403, 404, 422 among them). Below 400 it returns.
    ``cost`` is what the failed call cost (a vendor that bills refused requests), counted in the
    step's cost and against the budget.
    """
    status = getattr(response, "status_code", None)
    if status is None:
        status = response.status
    if status < 400:
        return
    reason = getattr(response, "reason_phrase", None) or getattr(response, "reason", None) or ""
    message = f"{status} {reason} from {response.url}".replace("  ", " ")
    if status in RETRYABLE or status >= 500:
        raise RetryableError(message, retry_after=retry_after(response.headers.get("Retry-After")), cost=cost)
    raise TerminalError(message, code=status, cost=cost)


def retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from ``now``; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - (now or datetime.datetime.now(datetime.timezone.utc))).total_seconds())
