"""WebSocket links to handler deployments, over which invocations are multiplexed.

One HTTP request per invocation costs several times more than a frame on an open socket, so the
sidecar keeps a few sockets per deployment open and tags every frame with its invocation ID.
Each link has one sender task that drains an outgoing buffer (callers never await a send) and one
reader task that dispatches incoming frames to the session registered for that invocation.

A frame that cannot be handled fails the attempt it names, never the link: the reader goes on
serving the others. A frame for an invocation the link does not carry (a late one after the
attempt ended, or a stranger's) is dropped. Only a frame that names no invocation at all (not
msgpack, a text frame, one over the size limit) closes the link: some attempt on it lost a
message and nobody can tell which, so every attempt on it is failed and retried from its
committed journal, which is always safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import aiohttp
import msgspec
from yarl import URL

from handler_sdk.protocol import ToSidecar, to_sidecar_decoder

from .held_blobs import HeldBlobs
from .signing import UNSIGNED, Signer

log = logging.getLogger(__name__)

#: What a frame may hold besides its one large payload (names, headers, a journal of references).
FRAME_HEADROOM = 1024 * 1024
#: Frames bigger than this are refused (a handler's ``Command`` holds one step or state value,
#: at most ``max_payload_bytes``, 64 MiB by default; a ``Start``'s blobs are bounded below it).
MAX_FRAME_BYTES = 64 * 1024 * 1024 + FRAME_HEADROOM


#: How long an open may wait for the deployment to answer the WebSocket upgrade. The session
#: bounds connecting only (a link lives for hours), so a port that accepts and never answers (a
#: stopped or wedged server) would otherwise hold the open, and everything awaiting it, for ever.
OPEN_TIMEOUT_S = 10.0

#: A link logs frames for invocations it does not carry at most this often (a busy handler that
#: keeps sending after its attempts were killed would flood the log otherwise).
STRAY_LOG_PERIOD_S = 60.0


class LinkError(ConnectionError):
    """The deployment cannot be reached; the attempt is retried with backoff."""


class Session(Protocol):
    """What a link delivers frames to: one running attempt of one invocation."""

    def on_message(self, message: ToSidecar) -> None: ...

    def fail(self, reason: str) -> None:
        """The attempt cannot go on: its link was lost, or a frame of it could not be handled."""

    def alive(self) -> None: ...


class Carrier(Protocol):
    """What an attempt needs of the link it runs over: a WebSocket link, or a request-response
    one (request_response.py)."""

    sessions: dict[str, Session]
    #: The blobs the handler process at the other end is believed to hold; ``None``: it keeps none
    #: between frames (request-response), so every blob goes with its ``Start``.
    held: HeldBlobs | None

    def send(self, frame: bytes) -> None: ...


class _Addressed(msgspec.Struct):
    """Any frame's invocation ID, read from a frame that does not decode as a whole."""

    invocation_id: str


_addressed_decoder = msgspec.msgpack.Decoder(_Addressed)


def addressee(data: bytes) -> str | None:
    """The invocation a frame that does not decode names, if it names one."""
    try:
        return _addressed_decoder.decode(data).invocation_id
    except msgspec.DecodeError:
        return None


def deliver(session: Session, message: ToSidecar) -> None:
    """Hand ``message`` to its attempt; what it raises fails that attempt alone."""
    try:
        session.on_message(message)
    except Exception as exc:
        log.exception("a %s frame for %s could not be handled", type(message).__name__, message.invocation_id)
        session.fail(f"a {type(message).__name__} frame from the handler could not be handled: "
                     f"{type(exc).__name__}: {exc}")


class Strays:
    """Counts frames for invocations a link does not carry; logs them at most once a period."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._dropped = 0
        self._logged_at = -STRAY_LOG_PERIOD_S

    def drop(self, kind: str, invocation_id: str) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._logged_at >= STRAY_LOG_PERIOD_S:
            log.warning("%s: dropped %d frame(s) for invocations it does not carry (latest: %s for %s)",
                        self._where, self._dropped, kind, invocation_id)
            self._logged_at, self._dropped = now, 0


class Link:
    """One open WebSocket to a deployment's ``/connect``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, uri: str) -> None:
        self._ws = ws
        self._strays = Strays(f"link to {uri}")
        self.sessions: dict[str, Session] = {}
        self.held: HeldBlobs | None = HeldBlobs()
        self._outgoing: list[bytes] = []
        self._wakeup = asyncio.Event()
        self.closed = False
        self._tasks = (asyncio.create_task(self._send_loop()), asyncio.create_task(self._read_loop()))

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        self._outgoing.append(frame)
        self._wakeup.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                frames, self._outgoing = self._outgoing, []
                for frame in frames:
                    await self._ws.send_bytes(frame)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            self._lost(f"handler connection lost while sending: {exc}")

    async def _read_loop(self) -> None:
        reason = "handler connection closed"
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.ERROR:  # e.g. a frame over MAX_FRAME_BYTES
                    reason = f"handler connection failed: {msg.data}"
                    break
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    reason = f"unexpected {msg.type.name} frame from handler (it names no invocation)"
                    break
                try:
                    message = to_sidecar_decoder.decode(msg.data)
                except msgspec.DecodeError as exc:
                    if (fatal := self._undecodable(msg.data, exc)) is not None:
                        reason = fatal
                        break
                    continue
                session = self.sessions.get(message.invocation_id)
                if session is not None:
                    deliver(session, message)
                else:
                    self._strays.drop(type(message).__name__, message.invocation_id)
        except (ConnectionError, aiohttp.ClientError) as exc:
            reason = f"handler connection lost: {exc}"
        self._lost(reason)

    def _undecodable(self, data: bytes, exc: msgspec.DecodeError) -> str | None:
        """Fail the attempt an undecodable frame names; why the link must close if it names none."""
        invocation_id = addressee(data)
        if invocation_id is None:
            return f"corrupt frame from handler (it names no invocation): {exc}"
        session = self.sessions.get(invocation_id)
        if session is not None:
            session.fail(f"undecodable frame from the handler: {exc}")
        else:
            self._strays.drop("undecodable", invocation_id)
        return None

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        sessions, self.sessions = self.sessions, {}
        for session in sessions.values():
            session.fail(reason)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        asyncio.ensure_future(self._ws.close())

    async def close(self) -> None:
        self._lost("sidecar shutting down")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._ws.close()


class DeploymentPool:
    """Up to ``size`` links to one deployment, opened on demand, least-loaded first."""

    def __init__(self, uri: str, session: aiohttp.ClientSession, size: int,
                 open_timeout_s: float = OPEN_TIMEOUT_S, max_frame_bytes: int = MAX_FRAME_BYTES,
                 signer: Signer = UNSIGNED) -> None:
        self.uri = uri.rstrip("/")
        self._url = URL(f"{self.uri}/connect")
        self._signer = signer
        self._max_frame_bytes = max_frame_bytes
        self._http = session
        self._size = size
        self._open_timeout_s = open_timeout_s
        self._links: list[Link] = []
        self._opening: asyncio.Task[Link] | None = None

    def ready(self) -> Link | None:
        """The least-loaded open link, without waiting (None: one must be opened first)."""
        if any(link.closed for link in self._links):  # on every launch: prune only when needed
            self._links = [link for link in self._links if not link.closed]
        if not self._links:
            return None
        if len(self._links) < self._size and self._opening is None:
            self._background_open()
        return min(self._links, key=lambda link: len(link.sessions))

    async def acquire(self) -> Link:
        return self.ready() or await self._open()

    def _background_open(self) -> None:
        task = self._start_open()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # failure: retried on next acquire

    def _start_open(self) -> asyncio.Task[Link]:
        if self._opening is None:
            self._opening = asyncio.create_task(self._connect())
            self._opening.add_done_callback(self._opened)
        return self._opening

    async def _open(self) -> Link:
        opening = self._start_open()
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and not (task is not None and task.cancelling()):  # ``close`` cut it short
                raise LinkError(f"cannot connect to deployment {self.uri}: its links were closed") from None
            raise

    def _opened(self, task: asyncio.Task[Link]) -> None:
        self._opening = None
        if not task.cancelled() and task.exception() is None:
            self._links.append(task.result())

    async def _connect(self) -> Link:
        timer = asyncio.timeout(self._open_timeout_s)
        try:
            async with timer:
                ws = await self._http.ws_connect(
                    self._url, max_msg_size=self._max_frame_bytes, heartbeat=30.0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    headers=self._signer.headers("GET", self._url.raw_path),  # signed now: it is timestamped
                )
        except (aiohttp.ClientError, OSError) as exc:  # OSError: TimeoutError too
            why: object = exc or type(exc).__name__
            if timer.expired():
                why = f"it did not answer the WebSocket upgrade within {self._open_timeout_s:g} s"
            elif isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 401:
                why = "it refused the sidecar's signature (401; its log says why)"
            raise LinkError(f"cannot connect to deployment {self.uri}: {why}") from None
        return Link(ws, self.uri)

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        await asyncio.gather(*(link.close() for link in self._links), return_exceptions=True)
        self._links = []
