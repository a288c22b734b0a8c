"""WebSocket links to handler deployments, over which invocations are multiplexed.

One HTTP request per invocation costs several times more than a frame on an open socket, so the
sidecar keeps a few sockets per deployment open and tags every frame with its invocation ID.
Each link has one sender task that drains an outgoing buffer (callers never await a send) and one
reader task that dispatches incoming frames to the session registered for that invocation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import aiohttp
import msgspec

from handler_sdk.protocol import ToSidecar, to_sidecar_decoder

log = logging.getLogger(__name__)

#: Frames bigger than this are refused by both sides (bodies are limited well below it).
MAX_FRAME_BYTES = 64 * 1024 * 1024


class LinkError(ConnectionError):
    """The deployment cannot be reached; the attempt is retried with backoff."""


class Session(Protocol):
    """What a link delivers frames to: one running attempt of one invocation."""

    def on_message(self, message: ToSidecar) -> None: ...

    def on_link_lost(self, reason: str) -> None: ...

    def alive(self) -> None: ...


class Link:
    """One open WebSocket to a deployment's ``/connect``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self.sessions: dict[str, Session] = {}
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
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    reason = f"unexpected {msg.type.name} frame from handler"
                    break
                try:
                    message = to_sidecar_decoder.decode(msg.data)
                except msgspec.DecodeError as exc:
                    reason = f"corrupt frame from handler: {exc}"
                    break
                session = self.sessions.get(message.invocation_id)
                if session is not None:
                    session.on_message(message)
        except (ConnectionError, aiohttp.ClientError) as exc:
            reason = f"handler connection lost: {exc}"
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        sessions, self.sessions = self.sessions, {}
        for session in sessions.values():
            session.on_link_lost(reason)
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

    def __init__(self, uri: str, session: aiohttp.ClientSession, size: int) -> None:
        self.uri = uri.rstrip("/")
        self._http = session
        self._size = size
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
        return await asyncio.shield(self._start_open())

    def _opened(self, task: asyncio.Task[Link]) -> None:
        self._opening = None
        if not task.cancelled() and task.exception() is None:
            self._links.append(task.result())

    async def _connect(self) -> Link:
        try:
            ws = await self._http.ws_connect(
                f"{self.uri}/connect", max_msg_size=MAX_FRAME_BYTES, heartbeat=30.0,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise LinkError(f"cannot connect to deployment {self.uri}: {exc or type(exc).__name__}") from None
        return Link(ws)

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        await asyncio.gather(*(link.close() for link in self._links), return_exceptions=True)
        self._links = []
