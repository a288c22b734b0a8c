"""The HTTP side of the client: one aiohttp session, URLs built from path parts, error answers
turned into exceptions, and overload refusals of idempotent requests retried after Retry-After."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple
from urllib.parse import quote

import aiohttp
from yarl import URL

from ._errors import ConnectionFailed, Overloaded, TimedOut, error_for

#: How long connecting may take before the sidecar counts as unreachable; waiting for an answer
#: is bounded by each request's own ``timeout`` (none by default: a call waits for its handler).
CONNECT_TIMEOUT_S = 10.0
#: Bodies over this size are sent from a file object, in chunks, rather than as one write.
LARGE_BODY_BYTES = 1024 * 1024
#: Seconds to wait before retrying a refusal whose Retry-After is missing or unreadable.
DEFAULT_RETRY_AFTER_S = 1.0


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: Mapping[str, str]


class Transport:
    """Owns the aiohttp session (made on first use, inside the running loop) until ``close``."""

    def __init__(self, base_url: str, *, overload_retries: int) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"the sidecar's ingress URL must be http(s)://host:port, got {base_url!r}")
        if overload_retries < 0:
            raise ValueError(f"overload_retries must be 0 or more, got {overload_retries!r}")
        self._base = str(url).rstrip("/")
        self._overload_retries = overload_retries
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def base_url(self) -> str:
        return self._base

    def url(self, parts: Sequence[str]) -> URL:
        """``parts`` joined as a path, each percent-encoded whole (a ``/`` in a key stays in it)."""
        return URL(self._base + "".join("/" + quote(part, safe="") for part in parts), encoded=True)

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this Client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S))
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, parts: Sequence[str], *, body: bytes = b"", headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None, idempotent: bool, timeout: float | None = None,
    ) -> Reply:
        """The answer to a request, if its status is 2xx; else the matching ``ClientError``.

        A 429 or 503 refusal of an ``idempotent`` request (one that cannot run twice: a GET, or a
        call with an idempotency key) is retried after its Retry-After, ``overload_retries``
        times, never past ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        retries = self._overload_retries if idempotent else 0
        while True:
            reply = await self._once(method, parts, body, headers, query, deadline)
            if reply.status < 300:
                return reply
            error = error_for(reply.status, reply.body, reply.headers)
            if not isinstance(error, Overloaded) or retries == 0:
                raise error
            pause = DEFAULT_RETRY_AFTER_S if error.retry_after is None else error.retry_after
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise error
            retries -= 1
            await asyncio.sleep(pause)

    async def _once(
        self, method: str, parts: Sequence[str], body: bytes, headers: Mapping[str, str] | None,
        query: Mapping[str, str] | None, deadline: float | None,
    ) -> Reply:
        url = self.url(parts)
        if query:
            url = url.update_query(query)
        left = None if deadline is None else max(0.001, deadline - time.monotonic())
        # aiohttp writes raw bytes in one go (and warns past 1 MiB); a file object in chunks.
        data = io.BytesIO(body) if len(body) > LARGE_BODY_BYTES else body or None
        try:
            async with self._http().request(method, url, data=data, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=left, sock_connect=CONNECT_TIMEOUT_S),
                                            ) as response:
                return Reply(response.status, await response.read(), response.headers)
        except asyncio.TimeoutError:
            raise TimedOut(f"{method} {url.path}: no answer within the timeout") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"{method} {url.path}: {_reason(exc)}") from exc

    async def open_stream(self, parts: Sequence[str], headers: Mapping[str, str], idle_s: float) -> aiohttp.ClientResponse:
        """An open streaming response (status 200); the caller reads and releases it. ``idle_s``:
        the longest silence before the connection counts as dropped."""
        url = self.url(parts)
        try:
            response = await self._http().get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=idle_s))
        except asyncio.TimeoutError:
            raise TimedOut(f"GET {url.path}: no answer within {idle_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"GET {url.path}: {_reason(exc)}") from exc
        if response.status != 200:
            try:
                body = await response.read()
            except aiohttp.ClientError as exc:
                raise ConnectionFailed(f"GET {url.path}: {_reason(exc)}") from exc
            finally:
                response.release()
            raise error_for(response.status, body, response.headers)
        return response


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot reach the sidecar at {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    return str(exc) or type(exc).__name__

