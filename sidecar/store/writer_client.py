"""The sidecar's end of the writer process: submit batches, get futures that resolve when durable.

Submits made during one pass of the event loop leave in one write (they are framed as they come
and flushed by a callback), and the writer's cumulative replies resolve them in order. A submit
that a handler is blocked on (a ``Run`` waiting for its acknowledgement) leaves at once instead,
with what is queued before it, and its ``on_durable`` runs as soon as the reply is read: on one
hot key every invocation waits for such a commit, and each pass of the loop it would otherwise
wait for costs tens of microseconds of that key's latency.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable

#: Told, as soon as the writer answers, ``None`` (durable) or why the batch could not be written.
OnDurable = Callable[[str | None], None]

from .batch import WriteBatch
from .wire import Submit, committed_decoder, frame, split_frames

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A write could not be made durable (disk full, map full, writer gone)."""


class WriterClient(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[str], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._seq = 0
        self._pending: deque[tuple[int, asyncio.Future[None], OnDurable | None]] = deque()
        self._outgoing: list[bytes] = []
        self._inbound = bytearray()
        self._lost: str | None = None
        self._closing = False
        self._on_lost = on_lost
        self._closed = self._loop.create_future()
        #: Group-commit statistics: replies received and batches they covered.
        self.commits = 0
        self.batches_committed = 0

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._inbound += data
        for payload in split_frames(self._inbound):
            reply = committed_decoder.decode(payload)
            self.commits += 1
            pending = self._pending
            while pending and pending[0][0] <= reply.upto:
                seq, future, on_durable = pending.popleft()
                self.batches_committed += 1
                if future.done():
                    continue
                error = reply.failed.get(seq)
                if on_durable is not None:
                    on_durable(error)
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(StoreError(error))
                    self._broken(f"a write failed: {error}")
                    return

    def connection_lost(self, exc: Exception | None) -> None:
        self._broken("closed" if self._closing else "the writer process is gone")
        if not self._closed.done():
            self._closed.set_result(None)

    def _broken(self, reason: str) -> None:
        """Nothing more can be made durable through this client: fail what waits, tell the owner.

        A write that failed (disk or map full) counts too: batches after it may not commit
        before it, or the store would no longer hold a prefix of what was submitted, so the
        owner stops and a restart recovers from what is on disk.
        """
        if self._lost is not None:
            return
        self._lost = reason
        while self._pending:
            _, future, on_durable = self._pending.popleft()
            if not future.done():
                if on_durable is not None:
                    on_durable(reason)
                future.set_exception(StoreError(reason))
        if not self._closing and self._on_lost is not None:
            self._on_lost(reason)

    # --- submitting -------------------------------------------------------------------------------

    def submit(self, batch: WriteBatch, on_durable: OnDurable | None = None) -> asyncio.Future[None]:
        """Queue ``batch``; the future resolves once it is durable. With ``on_durable``, the batch
        leaves now and ``on_durable`` is called synchronously with the writer's answer."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self._lost is not None:
            if on_durable is not None:
                on_durable(self._lost)
            future.set_exception(StoreError(self._lost))
            return future
        self._seq += 1
        self._pending.append((self._seq, future, on_durable))
        if not self._outgoing and on_durable is None:
            self._loop.call_soon(self._flush)
        self._outgoing.append(frame(Submit(self._seq, batch)))
        if on_durable is not None:
            self._flush()
        return future

    def _flush(self) -> None:
        if not self._outgoing:  # an urgent submit sent it already
            return
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._outgoing))
        self._outgoing = []

    async def close(self) -> None:
        """Wait for every submitted batch, then hang up (the writer exits when all clients have)."""
        self._closing = True
        if self._pending:
            await asyncio.gather(*(future for _, future, _ in list(self._pending)), return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        await self._closed


async def spawn_writer(
    data_dir: str, *, durability: str, map_size: int, on_lost: Callable[[str], None] | None = None,
) -> tuple[WriterClient, subprocess.Popen[bytes]]:
    """Start a writer process for this sidecar alone and connect to it."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar.store.writer", "--data-dir", data_dir, "--durability", durability,
         "--map-size", str(map_size), "--fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
    )
    theirs.close()
    return await connect_writer(ours, on_lost), process


async def connect_writer(sock: socket.socket, on_lost: Callable[[str], None] | None = None) -> WriterClient:
    client = WriterClient(on_lost)
    await asyncio.get_running_loop().create_unix_connection(lambda: client, sock=sock)
    return client
