"""The handler service's HTTP face: ``GET /discover``, the ``GET /connect`` WebSocket, and ``POST /invoke``.

One socket carries many invocations, each running as its own task; the sidecar may open several.
This is the benchmark's hot path, so a frame costs one decode and a dict lookup on the way in,
and one encode and a deque append on the way out: a single writer task per socket drains the
queue, which also keeps each invocation's commands in the order it issued them while letting
synchronous context calls (``ctx.set``) send without awaiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections import deque
from collections.abc import Iterable
from typing import cast

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from ._blob_cache import DEFAULT_CACHE_BYTES, BlobCache
from ._definition import Definition, HandlerDef, _Definition
from ._contexts import new_attempt
from ._gates import Gates
from ._identity import from_options as identity_from_options, middleware as identity_middleware
from ._invocation import AttemptContext
from ._threads import DaemonExecutor
from ._tracing_setup import step_tracer
from .protocol import (
    PROTOCOL_VERSION, Ack, Blobs, Cancel, Command, Completion, Discovery, End, Failure, FetchBlobs, Heartbeat,
    Leave, Revoke, Start,
    ToHandler, ToSidecar, encoder, to_handler_decoder,
)

logger = logging.getLogger("handler_sdk")

_CLOSED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})
#: How long a closing socket waits for its cancelled invocations to unwind.
_UNWIND_TIMEOUT = 1.0
#: How long a stopping service lets request-response attempts run before cancelling them: an
#: attempt cut off is retried by the sidecar, so SIGTERM means exit now, not "finish first".
_SHUTDOWN_TIMEOUT = 0.1


class ServiceTable:
    """What one app serves: its handlers, its discovery document, its open sockets."""

    def __init__(
        self, services: Iterable[Definition], heartbeat_interval: float, suspend_after: float,
        blob_cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if math.isnan(suspend_after) or suspend_after < 0:
            raise ValueError("suspend_after must be zero or more (math.inf: never suspend)")
        self.heartbeat_interval = heartbeat_interval
        self.suspend_after = suspend_after
        #: Large payloads, shared by every socket: a replay sends only what is not here.
        self.blobs = BlobCache(blob_cache_bytes)
        self.handlers: dict[tuple[str, str], tuple[HandlerDef, str]] = {}
        specs = []
        names: set[str] = set()
        for service in services:
            if not isinstance(service, _Definition):
                raise TypeError(f"expected a Service, VirtualObject or Workflow, got {service!r}")
            if service.name in names:
                raise ValueError(f"two services are named {service.name!r}")
            names.add(service.name)
            for handler in service.handlers.values():
                handler.resolve()  # surface annotation errors now, not on the first request
                self.handlers[(service.name, handler.name)] = (handler, service.kind)
            specs.append(service.spec())
        if not names:
            raise ValueError("app() needs at least one service")
        self.discovery = msgspec.json.encode(Discovery(protocol=PROTOCOL_VERSION, services=specs, blob_refs=True))
        self.sockets: set[web.WebSocketResponse] = set()
        #: Where step spans go, if the OTEL_* variables turn export on (with the tracing extra).
        self.spans = step_tracer()

    async def flush_spans(self, _app: web.Application) -> None:
        """On shutdown: export the spans still in the batch (waiting at most ``otel.SHUTDOWN_WAIT_S``)."""
        if self.spans is not None:
            await asyncio.to_thread(self.spans.shutdown)

    async def close_sockets(self, _app: web.Application) -> None:
        """On shutdown: close every open socket (all at once), or the server would wait for them."""
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"shutting down")
                               for ws in list(self.sockets)))


SERVICE_TABLE = web.AppKey("handler_sdk.services", ServiceTable)
_start_decoder = msgspec.msgpack.Decoder(Start)


class Connection:
    """One sidecar socket and the invocations multiplexed over it."""

    def __init__(self, ws: web.WebSocketResponse, table: ServiceTable) -> None:
        self._ws = ws
        self._table = table
        self._attempts: dict[str, AttemptContext] = {}
        self._out: deque[bytes] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._gates = Gates(self.send, wait_ms=table.suspend_after * 1000)
        #: Starts waiting for the blobs they refer to (``FetchBlobs`` sent), by invocation.
        self._fetching: dict[str, Start] = {}
        #: The sidecar's blob threshold, from its latest ``Start``: larger payloads we send, it
        #: believes we hold, so we keep them.
        self._blob_threshold = 0

    def send(self, message: ToSidecar) -> None:
        """Queue one message; the writer task sends queued messages in order."""
        frame = encoder.encode(message)
        # A frame within the threshold holds no payload over it: most commands skip the look.
        if type(message) is Command and self._blob_threshold and len(frame) > self._blob_threshold:
            self._table.blobs.remember(message.entry, self._blob_threshold)
        self._out.append(frame)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def _write_loop(self) -> None:
        ws, out = self._ws, self._out
        loop = asyncio.get_running_loop()
        try:
            while True:
                while out:
                    # Uncompressed frames go straight to the transport; this await only
                    # suspends when the peer is slow (flow control), which is what we want.
                    await ws.send_bytes(out.popleft())
                self._wakeup = loop.create_future()
                await self._wakeup
        except (ConnectionError, RuntimeError) as exc:  # socket gone: the reader sees it too
            logger.debug("socket writer stopped: %s", exc)

    async def _heartbeat_loop(self) -> None:
        interval = self._table.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            for attempt in self._attempts.values():
                if attempt.needs_heartbeat:
                    self.send(Heartbeat(invocation_id=attempt.invocation_id))

    async def serve(self) -> None:
        """Read frames until the socket closes; then kill what still runs on it."""
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._write_loop())
        heartbeats = loop.create_task(self._heartbeat_loop())
        ws, decode = self._ws, to_handler_decoder.decode
        try:
            while True:
                frame = await ws.receive()
                if frame.type == WSMsgType.BINARY:
                    try:
                        message = decode(frame.data)
                    except msgspec.DecodeError as exc:
                        logger.error("closing socket: undecodable frame from the sidecar: %s", exc)
                        await ws.close(code=WSCloseCode.PROTOCOL_ERROR, message=b"bad frame")
                        break
                    self._dispatch(message)
                elif frame.type in _CLOSED:
                    break
                else:
                    logger.error("closing socket: unexpected %s frame", frame.type.name)
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames only")
                    break
        finally:
            attempts = list(self._attempts.values())
            self._attempts.clear()
            for attempt in attempts:
                attempt.kill()
            writer.cancel()
            heartbeats.cancel()
            tasks = [a.task for a in attempts if a.task is not None]
            await asyncio.gather(writer, heartbeats, return_exceptions=True)
            if tasks:
                await asyncio.wait(tasks, timeout=_UNWIND_TIMEOUT)

    def _dispatch(self, message: ToHandler) -> None:
        kind = type(message)  # exact-type tests: cheaper than isinstance on the hot path
        if kind is Ack:
            attempt = self._attempts.get(message.invocation_id)
            if attempt is not None:
                attempt.on_ack(cast(Ack, message).index)
        elif kind is Completion:
            attempt = self._attempts.get(message.invocation_id)
            if attempt is not None:  # else it ended or suspended: the sidecar restarts it with the entry done
                completion = cast(Completion, message)
                attempt.on_completion(completion.index, completion.value, completion.failure,
                                      completion.clock_offset_ms)
        elif kind is Start:
            self._start(cast(Start, message))
        elif kind is Leave:
            self._gates.answered(cast(Leave, message))
        elif kind is Revoke:
            self._gates.revoked(cast(Revoke, message).breaker)
        elif kind is Blobs:
            self._blobs(cast(Blobs, message))
        elif kind is Cancel:
            if cast(Cancel, message).kill:  # abort: no more handler code runs
                self._fetching.pop(message.invocation_id, None)
                attempt = self._attempts.pop(message.invocation_id, None)
                if attempt is not None:
                    attempt.kill()
            else:  # cooperative: the handler sees TerminalError(409) at its next await
                attempt = self._attempts.get(message.invocation_id)
                if attempt is not None:
                    attempt.cancel()

    def _start(self, start: Start) -> None:
        previous = self._attempts.pop(start.invocation_id, None)
        if previous is not None:  # the sidecar gave up on that attempt: it must not go on
            previous.kill()
        self._blob_threshold = start.payloads.blob_threshold
        resolved = self._table.blobs.resolve(start)
        if isinstance(resolved, list):  # it refers to blobs we lack: ask, and start once they are here
            self._fetching[start.invocation_id] = start
            self.send(FetchBlobs(invocation_id=start.invocation_id, sha256=resolved))
            return
        self._fetching.pop(start.invocation_id, None)
        self._run(resolved)

    def _blobs(self, answer: Blobs) -> None:
        start = self._fetching.get(answer.invocation_id)
        if start is None:
            return
        terms = start.payloads
        start = msgspec.structs.replace(start, payloads=msgspec.structs.replace(terms, blobs=terms.blobs + answer.blobs))
        resolved = self._table.blobs.resolve(start)
        if not isinstance(resolved, list):
            del self._fetching[answer.invocation_id]
            self._run(resolved)
        elif answer.final:  # the sidecar has not got them all: this attempt cannot replay
            del self._fetching[answer.invocation_id]
            self.send(End(invocation_id=answer.invocation_id, failure=Failure(
                code=503, message=f"{len(resolved)} blob(s) the journal refers to could not be had", terminal=False)))
        else:
            self._fetching[answer.invocation_id] = start

    def _run(self, start: Start) -> None:
        found = self._table.handlers.get((start.service, start.handler))
        if found is None:
            failure = Failure(code=404, message=f"no handler {start.service}/{start.handler} here")
            self.send(End(invocation_id=start.invocation_id, failure=failure))
            return
        handler, service_kind = found
        attempt = new_attempt(start, handler, self.send, service_kind,
                              suspend_after=self._table.suspend_after, gates=self._gates, spans=self._table.spans)
        self._attempts[start.invocation_id] = attempt
        task = asyncio.get_running_loop().create_task(attempt.execute())
        attempt.task = task
        task.add_done_callback(lambda t: self._reap(attempt, t))

    def _reap(self, attempt: AttemptContext, task: asyncio.Task[None]) -> None:
        if self._attempts.get(attempt.invocation_id) is attempt:
            del self._attempts[attempt.invocation_id]
        if not task.cancelled() and task.exception() is not None:
            logger.error("invocation %s: SDK error", attempt.invocation_id, exc_info=task.exception())


async def _invoke(request: web.Request) -> web.Response:
    """Request-response mode, for hosts that cannot hold a socket: the body is one ``Start``; the
    answer, a msgpack array of the attempt's messages up to its ``End`` or ``Suspend``. A step
    that needs its acknowledgement ends the attempt with a ``Suspend`` on it: the sidecar makes
    it durable and invokes again with the longer journal. ``x-sidecar-cancel: 1``: the
    invocation is being cancelled (cooperatively)."""
    table = request.app[SERVICE_TABLE]
    try:
        start = _start_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return web.json_response({"code": 400, "message": f"expected one msgpack Start: {exc}"}, status=400)
    messages: list[ToSidecar] = []
    resolved = table.blobs.resolve(start)  # a request-response Start carries every blob it refers to
    found = table.handlers.get((start.service, start.handler))
    if isinstance(resolved, list):
        messages.append(End(invocation_id=start.invocation_id, failure=Failure(
            code=503, message=f"{len(resolved)} blob(s) the journal refers to were not sent", terminal=False)))
    elif found is None:
        messages.append(End(invocation_id=start.invocation_id,
                            failure=Failure(code=404, message=f"no handler {start.service}/{start.handler} here")))
    else:
        handler, service_kind = found
        attempt = new_attempt(resolved, handler, messages.append, service_kind, suspend_after=0.0,
                              suspend_for_acks=True, spans=table.spans)
        if request.headers.get("x-sidecar-cancel") == "1":
            attempt.cancel()
        await attempt.execute()
    return web.Response(body=encoder.encode(messages), content_type="application/msgpack")


async def _discover(request: web.Request) -> web.Response:
    body = request.app[SERVICE_TABLE].discovery
    return web.Response(body=body, content_type="application/json")


async def _connect(request: web.Request) -> web.WebSocketResponse:
    table = request.app[SERVICE_TABLE]
    # No compression (deflate per frame costs more than it saves on small frames); no size
    # limit: journals can be large, and the peer is our own sidecar.
    ws = web.WebSocketResponse(compress=False, max_msg_size=0)
    await ws.prepare(request)
    table.sockets.add(ws)
    try:
        await Connection(ws, table).serve()
    finally:
        table.sockets.discard(ws)
    return ws


def app(
    services: Iterable[Definition] | Definition, *, heartbeat_interval: float = 5.0,
    suspend_after: float = 1.0, blob_cache_bytes: int = DEFAULT_CACHE_BYTES,
    identity_keys: Iterable[str] | None = None,
) -> web.Application:
    """The handler service as an aiohttp application (``GET /discover``, ``GET /connect``).

    ``heartbeat_interval`` (seconds) is how often a running step, or a handler awaiting a timer or
    an awakeable, tells the sidecar it is alive; keep it well under the handlers' inactivity
    timeout (default 60 s). ``suspend_after`` (seconds) is how long a handler that does nothing
    but await timers and awakeables keeps running before it suspends: it frees itself, and the
    sidecar runs it again, replaying its journal, once one of them completes (``math.inf``: never).
    ``blob_cache_bytes`` bounds the cache of large payloads (over the sidecar's
    ``blob_threshold_bytes``) that lets a replay skip sending what this process already holds
    (0: none; each replay is then sent every large payload again).
    ``identity_keys``: the public keys (PEM strings) of the sidecars this service serves, that
    of each one's ``--signing-key``; a request that none of them signed within the last 60 s is
    refused with 401 (``None``: those in ``HANDLER_IDENTITY_KEYS``, if it is set; none: every
    request is served). Verifying needs the ``signing`` extra: keys without it raise ``ImportError``
    naming it.
    """
    if isinstance(services, _Definition):
        services = [services]
    table = ServiceTable(services, heartbeat_interval, suspend_after, blob_cache_bytes)
    identity = identity_from_options(identity_keys)
    # No body limit for POST /invoke, as none for /connect's frames: a request-response Start
    # carries its journal and every blob it refers to, and the peer is our own sidecar.
    application = web.Application(client_max_size=0,
                                  middlewares=[identity_middleware(identity)] if identity else ())
    application[SERVICE_TABLE] = table
    application.router.add_get("/discover", _discover)
    application.router.add_get("/connect", _connect)
    application.router.add_post("/invoke", _invoke)
    application.on_shutdown.append(table.close_sockets)
    application.on_cleanup.append(table.flush_spans)
    return application


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # no uvloop extra (none on Windows): the stdlib loop works, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve_forever(application: web.Application, host: str, port: int, reuse_port: bool) -> None:
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())  # sync steps never delay exit
    runner = web.AppRunner(application, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        logger.info("handler service listening on http://%s:%d", host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        except (NotImplementedError, RuntimeError):  # no signal handlers on this platform
            pass
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    services: Iterable[Definition] | Definition, *, host: str = "127.0.0.1", port: int = 9080,
    heartbeat_interval: float = 5.0, suspend_after: float = 1.0, reuse_port: bool = False,
    blob_cache_bytes: int = DEFAULT_CACHE_BYTES, identity_keys: Iterable[str] | None = None,
) -> None:
    """Serve ``services`` on ``host:port`` until SIGINT or SIGTERM, on uvloop where it is installed
    (the ``uvloop`` extra); prints nothing.

    ``heartbeat_interval``, ``suspend_after``, ``blob_cache_bytes`` and ``identity_keys`` are as for ``app()``. ``reuse_port``: several
    processes serving the same services may bind the same port (``SO_REUSEPORT``), and the kernel
    spreads the sidecar's connections over them: one deployment that uses several cores.
    """
    application = app(services, heartbeat_interval=heartbeat_interval, suspend_after=suspend_after,
                      blob_cache_bytes=blob_cache_bytes, identity_keys=identity_keys)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        try:
            runner.run(_serve_forever(application, host, port, reuse_port))
        except KeyboardInterrupt:
            pass
