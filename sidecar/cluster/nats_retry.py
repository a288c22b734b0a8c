"""Which NATS failures pass by themselves, and a bounded retry over them.

For the 4-8 s of a JetStream leader election after a server dies, requests for the stream fail
at once with "no responders" or time out, and a client that lost its server reconnects to another:
all of it passes without anyone acting, so the caller retries (same request, same message ID)
until a deadline. Everything else (a refusal by the stream, a closed client) is an answer, and is
raised at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from .changelog import LogUnavailable

T = TypeVar("T")

#: Each attempt's own limit: short enough that a request lost to a dead leader leaves time to retry.
ATTEMPT_TIMEOUT_S = 2.0

class Settling(Exception):
    """A key another client is writing at this moment: refused to us as taken (its write is in
    flight at the stream's leader), not yet readable. Read again in a moment."""


_TRANSIENT = (
    Settling,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


#: JetStream's "no suitable peers for placement, peer offline" (a 400): a stream's replicas need a
#: server the meta leader does not count online yet, as in the seconds after a cluster starts.
NO_PLACEMENT_PEER_OFFLINE = 10005


def transient(exc: BaseException) -> bool:
    """A failure that an election or a reconnect explains: worth the same request again."""
    if isinstance(exc, _TRANSIENT):
        return True
    # 503: "JetStream system temporarily unavailable" and kin; 500: e.g. "insufficient resources"
    # while a server that a replica must be placed on is down.
    # (Some subclasses, the KV errors, have no code.)
    return isinstance(exc, nats.js.errors.APIError) and (
        getattr(exc, "code", None) in (500, 503) or getattr(exc, "err_code", None) == NO_PLACEMENT_PEER_OFFLINE)


async def retrying(attempt: Callable[[float], Awaitable[T]], *, within: float, what: str) -> T:
    """``attempt(timeout)`` until it returns or fails with something other than a transient
    failure. After ``within`` seconds of transient failures, and at once for any other NATS
    error (a refusal, a closed client): :class:`LogUnavailable`, so that no NATS exception
    reaches the sidecar. Anything else the attempt raises (``Fenced``) passes through."""
    deadline = time.monotonic() + within
    delay = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            return await attempt(max(0.05, min(ATTEMPT_TIMEOUT_S, remaining)))
        except Exception as exc:
            if not transient(exc):
                if isinstance(exc, nats.errors.Error):
                    raise LogUnavailable(f"{what}: {exc}") from exc
                raise
            if time.monotonic() + delay >= deadline:
                raise LogUnavailable(f"{what}: NATS gave no answer within {within:g} s (last: {exc!r})") from exc
        await asyncio.sleep(delay)
        delay = min(delay * 1.6, 0.5)
