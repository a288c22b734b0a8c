"""The worker mesh: hands a request that landed on the wrong worker to the worker that owns it.

Workers share the ingress port, so the kernel spreads connections over them without regard to
keys. A request for a partition another worker owns is handed over as one msgpack frame on a
Unix socket between the two processes (no second HTTP exchange), processed there by the same
code, and the answer comes back the same way. Frames are multiplexed by a request number, so one
socket per pair of workers carries any number of requests at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol, final

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from ..http.errors import error_response, exception_response
from ..store.wire import frame_bytes, split_frames

log = logging.getLogger(__name__)

#: How long to wait for a worker that is (re)starting before answering 503.
_CONNECT_PATIENCE_S = 5.0


@final
class Forwarded(msgspec.Struct, array_like=True, tag=True):
    """An HTTP request, as the receiving worker read it."""

    number: int
    kind: str  # which entry point handles it: see Mesh.handlers
    method: str
    path: str
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes


@final
class Abandoned(msgspec.Struct, array_like=True, tag=True):
    """The client of request ``number`` went away: stop working on its answer."""

    number: int


class Answer(msgspec.Struct, array_like=True):
    number: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes


_encoder = msgspec.msgpack.Encoder()
_forwarded_decoder = msgspec.msgpack.Decoder(Forwarded | Abandoned)
_answer_decoder = msgspec.msgpack.Decoder(Answer)

#: An entry point: (method, path, query, headers, body) -> response, as for a local request.
Handler = Callable[[str, str, dict[str, str], CIMultiDict[str], bytes], Awaitable[web.Response]]


class MeshError(ConnectionError):
    """The owning worker cannot be reached (it is restarting): the client should retry."""


def socket_address(data_dir: str, index: int) -> str:
    """Where worker ``index`` listens: an abstract Unix socket on Linux (no path length limit,
    nothing left on disk after a crash), a file in the data directory elsewhere."""
    anchor = str(Path(data_dir).resolve())
    if sys.platform.startswith("linux"):
        return f"\0durable-sidecar:{anchor}:{index}"
    return str(Path(anchor) / f"worker-{index}.sock")


def answer_body(response: web.Response) -> bytes:
    """The body of a response :meth:`Mesh.forward` gave (it holds the owner's bytes as they came)."""
    body = response.body
    assert isinstance(body, bytes)
    return body


class PeerConnection(asyncio.Protocol):
    """Our connection to one other worker; requests in flight are matched to answers by number."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[Answer]] = {}
        self._inbound = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._inbound += data
        for payload in split_frames(self._inbound):
            answer = _answer_decoder.decode(payload)
            future = self.waiting.pop(answer.number, None)
            if future is not None and not future.done():
                future.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(MeshError("the owning worker went away"))
        self.waiting.clear()


class _Server(asyncio.Protocol):
    """One other worker's connection to us: each forwarded request runs as its own task."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._transport: asyncio.Transport | None = None
        self._inbound = bytearray()
        self._answering: dict[int, asyncio.Task[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._mesh.inbound.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._mesh.inbound.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        self._inbound += data
        for payload in split_frames(self._inbound):
            message = _forwarded_decoder.decode(payload)
            if type(message) is Abandoned:
                task = self._answering.pop(message.number, None)
                if task is not None:
                    task.cancel()
                continue
            task = self._mesh.spawn(self._answer(message))
            self._answering[message.number] = task
            task.add_done_callback(functools.partial(self._forget, message.number))

    def _forget(self, number: int, _: asyncio.Task[None]) -> None:
        self._answering.pop(number, None)

    async def _answer(self, request: Forwarded) -> None:
        response = await self._mesh.handle(request)
        if self._transport is not None and not self._transport.is_closing():
            body = response.body if isinstance(response.body, bytes) else b""
            self._transport.write(frame_bytes(_encoder.encode(Answer(
                request.number, response.status, [(str(k), v) for k, v in response.headers.items()], body))))


class Endpoints(Protocol):
    """Where the processes of a mesh listen and how to reach them: Unix sockets between the
    workers of one machine, TCP between the nodes of a cluster."""

    me: int

    def others(self) -> list[int]:
        """Every other process of the mesh, as far as is known now."""
        ...

    async def listen(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer: ...

    async def connect(self, peer: int, factory: Callable[[], PeerConnection]) -> PeerConnection:
        """A connection to ``peer``; raises ``OSError`` while it cannot be reached."""
        ...


class WorkerEndpoints:
    """The workers of one sidecar: ``index`` of ``workers``, at ``socket_address``."""

    def __init__(self, data_dir: str, index: int, workers: int) -> None:
        self._data_dir, self.me, self._workers = data_dir, index, workers

    def others(self) -> list[int]:
        return [index for index in range(self._workers) if index != self.me]

    async def listen(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
        # Sockets made by hand: uvloop does not take abstract addresses by name.
        address = socket_address(self._data_dir, self.me)
        if not address.startswith("\0"):  # a socket file left by a crashed worker
            Path(address).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(64)
        return await asyncio.get_running_loop().create_unix_server(factory, sock=listener)

    async def connect(self, peer: int, factory: Callable[[], PeerConnection]) -> PeerConnection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_address(self._data_dir, peer))  # local: completes at once
        except OSError:
            sock.close()
            raise
        _, connection = await asyncio.get_running_loop().create_unix_connection(factory, sock=sock)
        return connection


class Mesh:
    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self.index = endpoints.me
        self.handlers: dict[str, Handler] = {}
        self._peers: dict[int, PeerConnection] = {}
        self._connecting: dict[int, asyncio.Task[PeerConnection]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: The other processes' connections to us: closed with the mesh, so that nothing more is
        #: handed to a process (a node's generation) that stopped serving.
        self.inbound: set[asyncio.BaseTransport] = set()
        self._number = 0
        #: Set once this worker's ingress listens: worker 0 opens the admin API (and ``/health``)
        #: only when every worker says so.
        self.serving = False
        self.handlers["worker.serving"] = self._answer_serving

    def others(self) -> list[int]:
        """Every other worker (node) of the mesh."""
        return self._endpoints.others()

    async def _answer_serving(self, method: str, path: str, query: dict[str, str], headers: CIMultiDict[str],
                              body: bytes) -> web.Response:
        return web.json_response({"serving": self.serving}, status=200 if self.serving else 503)

    async def until_all_serving(self) -> None:
        """Return once every other worker's ingress listens (each one waited for as long as it takes:
        a worker that never comes up dies, and the supervisor restarts the whole group)."""
        for index in self.others():
            while True:
                try:
                    answer = await self.forward(index, "worker.serving", "GET", "/", {}, CIMultiDict(), b"")
                    if answer.status == 200:
                        break
                except MeshError:
                    pass
                await asyncio.sleep(0.02)

    async def start(self) -> None:
        self._server = await self._endpoints.listen(lambda: _Server(self))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self.inbound):
            transport.close()
        for peer in self._peers.values():
            if peer.transport is not None:
                peer.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def handle(self, request: Forwarded) -> web.Response:
        handler = self.handlers.get(request.kind)
        if handler is None:
            return error_response(500, f"worker {self.index} has no entry point {request.kind!r}")
        try:
            return await handler(request.method, request.path, request.query, CIMultiDict(request.headers),
                                 request.body)
        except Exception as exc:  # the same mapping a local request gets
            return exception_response(exc, f"forwarded {request.method} {request.path}")

    async def _peer(self, index: int) -> PeerConnection:
        peer = self._peers.get(index)
        if peer is not None and not peer.lost:
            return peer
        task = self._connecting.get(index)
        if task is None:
            task = self._connecting[index] = asyncio.ensure_future(self._connect(index))
            task.add_done_callback(lambda _t: self._connecting.pop(index, None))
        return await asyncio.shield(task)

    async def _connect(self, index: int) -> PeerConnection:
        """Connect to worker ``index``, waiting a little for one that is still starting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CONNECT_PATIENCE_S
        while True:
            try:
                peer = await self._endpoints.connect(index, PeerConnection)
                break
            except OSError as exc:
                if loop.time() > deadline:
                    raise MeshError(f"worker {index} is not reachable: {exc}") from None
                await asyncio.sleep(0.05)
        self._peers[index] = peer
        return peer

    async def forward(self, owner: int, kind: str, method: str, path: str, query: dict[str, str],
                      headers: Mapping[str, str], body: bytes) -> web.Response:
        """Have worker ``owner`` answer this request; its response, as if made here."""
        peer = await self._peer(owner)
        self._number += 1
        number = self._number
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        peer.waiting[number] = future
        assert peer.transport is not None
        peer.transport.write(frame_bytes(_encoder.encode(Forwarded(
            number, kind, method, path, query, [(str(k), v) for k, v in headers.items()], body))))
        try:
            answer = await future
        except asyncio.CancelledError:  # our client went away: so may the owner's work for it
            peer.waiting.pop(number, None)
            if peer.transport is not None and not peer.transport.is_closing():
                peer.transport.write(frame_bytes(_encoder.encode(Abandoned(number))))
            raise
        response = web.Response(status=answer.status, body=answer.body)
        for name, value in answer.headers:
            if name.lower() != "content-length":
                response.headers.add(name, value)
        return response
