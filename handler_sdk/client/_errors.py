"""What a failed request raises: one hierarchy under ``ClientError``, its class chosen by the
HTTP status, each carrying the ``code`` and ``message`` of the sidecar's JSON error body."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

import msgspec


class ClientError(Exception):
    """Base of everything the client raises about a request that did not succeed.

    ``code`` is the HTTP status of the answer (the ``code`` of its JSON body), ``None`` where no
    answer came; ``invocation_id`` the invocation it concerns, where the sidecar named one.
    """

    def __init__(self, code: int | None, message: str, *, invocation_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if code is not None else message)
        self.code = code
        self.message = message
        self.invocation_id = invocation_id


class BadRequest(ClientError):
    """400: the input did not decode as the handler's parameter (or the handler refused it), or an
    identifier (key, idempotency key) is over 1,024 bytes."""

    code: int


class NotFound(ClientError):
    """404: no such service, handler, invocation, awakeable, or workflow run."""

    code: int


class Conflict(ClientError):
    """409: a workflow's ``run`` already ran for that key, or an awakeable was already completed."""

    code: int


class PayloadTooLarge(ClientError):
    """413: the argument is over the sidecar's body limit (10 MiB unless configured)."""

    code: int


class NotReady(ClientError):
    """470: ``output`` of an invocation that has not finished; ``attach`` waits for it instead."""

    code: int


class Overloaded(ClientError):
    """429 (a key's line is full) or 503 (a worker or the store cannot take more): nothing was
    accepted; try again after ``retry_after`` seconds (``None``: the answer did not say)."""

    code: int

    def __init__(self, code: int, message: str, *, invocation_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(code, message, invocation_id=invocation_id)
        self.retry_after = retry_after


class InvocationFailed(ClientError):
    """The handler failed terminally: ``code`` is its ``TerminalError``'s (500 unless it chose
    one; 408 for a timeout, 402 for a budget, 409 for a cancellation), ``message`` its message."""

    code: int


class ConnectionFailed(ClientError):
    """No answer: the sidecar could not be reached, or the connection dropped before the answer
    came. A call may still have been accepted: repeat it with the same idempotency key to be sure
    it runs once."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class TimedOut(ConnectionFailed, TimeoutError):
    """The answer did not come within the request's ``timeout``. The invocation goes on in the
    sidecar: attach to it (by ID or idempotency key) for its result."""


class _ErrorBody(msgspec.Struct):
    code: int
    message: str


_error_decoder = msgspec.json.Decoder(_ErrorBody)
_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest, 404: NotFound, 409: Conflict, 413: PayloadTooLarge, 470: NotReady,
}


def error_for(status: int, body: bytes, headers: Mapping[str, str]) -> ClientError:
    """The exception for an error answer. A body that is not the sidecar's JSON error (a proxy's
    page, say) becomes the message, cut short."""
    try:
        message = _error_decoder.decode(body).message
    except msgspec.DecodeError:
        message = body[:500].decode(errors="replace") or f"HTTP {status}"
    invocation_id = headers.get("x-restate-id")
    if status in (429, 503):
        return Overloaded(status, message, invocation_id=invocation_id,
                          retry_after=retry_after_s(headers.get("Retry-After")))
    return _BY_STATUS.get(status, InvocationFailed)(status, message, invocation_id=invocation_id)


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: a number of seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
