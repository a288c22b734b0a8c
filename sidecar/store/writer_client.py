"""The sidecar's end of the writer process: submit batches, get futures that resolve when durable.

Submits made during one pass of the event loop leave in one write (they are framed as they come
and flushed by a callback), and the writer's cumulative replies resolve them in order. A submit
that a handler is blocked on (a ``Run`` waiting for its acknowledgement) leaves at once instead,
with what is queued before it, and its ``on_durable`` runs as soon as the reply is read: on one
hot key every invocation waits for such a commit, and each pass of the loop it would otherwise
wait for costs tens of microseconds of that key's latency.

A failed write fails its future with :class:`StoreError` and nothing else: the client goes on.
A batch refused for its contents is ``refused``. One that failed for want of room (``full``
until a later batch commits) fences the writer against this client's later batches (see
``writer.py``): the client fails at once every pending batch the fence will fail, and only once
their callbacks have run do its submits carry the ``resume`` that lifts it. Only a writer that
is gone ends the client.
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
#: Told of each group commit: seconds from the flush of its oldest batch to the reply, and how
#: many of this client's batches it covered.
OnCommit = Callable[[float, int], None]

from .batch import WriteBatch
from .wire import Submit, committed_decoder, frame, split_frames

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A write could not be made durable (disk full, map full, writer gone); ``refused``: because
    of what the batch held (a key LMDB cannot store), so trying it again will not help."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class WriterClient(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[str], None] | None = None, on_commit: OnCommit | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._seq = 0
        #: (seq, future, on_durable, the resume it was sent with), in submit order.
        self._pending: deque[tuple[int, asyncio.Future[None], OnDurable | None, int]] = deque()
        self._outgoing: list[bytes] = []
        self._inbound = bytearray()
        self._lost: str | None = None
        self._closing = False
        self._on_lost = on_lost
        #: A write failed for want of room and none has committed since: writes are refused.
        self.full = False
        #: The first failed seq of the writer's fence on us, as far as we know; what we resume past.
        self._fence = 0
        self._resume = 0
        self._resume_epoch = 0
        self._closed = self._loop.create_future()
        #: Group-commit statistics: replies received and batches they covered.
        self.commits = 0
        self.batches_committed = 0
        self._on_commit = on_commit
        #: (the last seq a flush sent, when), oldest first: what a commit's latency counts from.
        self._flushes: deque[tuple[int, float]] = deque()

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._inbound += data
        for payload in split_frames(self._inbound):
            reply = committed_decoder.decode(payload)
            self.commits += 1
            pending = self._pending
            if self._on_commit is not None and pending:
                self._time_commit(pending[0][0], reply.upto)
            while pending and pending[0][0] <= reply.upto:
                seq, future, on_durable, resume = pending.popleft()
                self.batches_committed += 1
                error = reply.failed.get(seq)
                refused = error is not None and seq in reply.refused
                if error is None:
                    self.full = False
                if not future.done():  # else failed here already, behind a fence (or cancelled)
                    if on_durable is not None:
                        on_durable(error)
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(StoreError(error, refused=refused))
                if error is not None and not refused and resume >= self._fence:  # the writer fenced us here
                    self._fenced(seq, error)

    def _time_commit(self, oldest: int, upto: int) -> None:
        flushes = self._flushes
        while flushes and flushes[0][0] < oldest:
            flushes.popleft()
        if not flushes:
            return
        sent = flushes[0][1]
        while flushes and flushes[0][0] <= upto:
            flushes.popleft()
        assert self._on_commit is not None
        self._on_commit(self._loop.time() - sent, upto - oldest + 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._broken("closed" if self._closing else "the writer process is gone")
        if not self._closed.done():
            self._closed.set_result(None)

    def _fenced(self, seq: int, error: str) -> None:
        """Batch ``seq`` failed for want of room, and the writer fails our later batches until
        one carries ``resume >= seq``: fail them all now, and every submit until then, so that
        whoever waits on them has been told before anything of ours may commit again."""
        if not self.full:
            log.error("the store cannot take writes now: %s", error)
        self.full = True
        self._fence = seq
        reason = f"an earlier write failed: {error}"
        for _, future, on_durable, resume in self._pending:
            if not future.done() and resume < seq:
                if on_durable is not None:
                    on_durable(reason)
                future.set_exception(StoreError(reason))
        self._resume_later()

    def _resume_later(self) -> None:
        """Lift the fence after the callbacks of every future failed so far (queued before this)."""
        self._resume_epoch += 1
        self._loop.call_soon(self._resume_past, self._resume_epoch)

    def _resume_past(self, epoch: int) -> None:
        if epoch == self._resume_epoch:  # no failure since whose callbacks are still queued
            self._resume = self._fence

    def _fail_behind_fence(self, future: asyncio.Future[None], on_durable: OnDurable | None) -> None:
        """A submit made while the fence stands (failed from the loop, once its caller holds the
        future and has added its callbacks)."""
        reason = "the store cannot take writes now: an earlier write failed for want of room"
        if on_durable is not None:
            on_durable(reason)
        if not future.done():
            future.set_exception(StoreError(reason))
        self._resume_later()

    def _broken(self, reason: str) -> None:
        """The writer is gone: nothing more can be made durable, fail what waits, tell the owner."""
        if self._lost is not None:
            return
        self._lost = reason
        while self._pending:
            _, future, on_durable, _ = self._pending.popleft()
            if not future.done():
                if on_durable is not None:
                    on_durable(reason)
                future.set_exception(StoreError(reason))
        if not self._closing and self._on_lost is not None:
            self._on_lost(reason)

    # --- submitting -------------------------------------------------------------------------------

    def submit(self, batch: WriteBatch, on_durable: OnDurable | None = None) -> asyncio.Future[None]:
        """Queue ``batch``; the future resolves once it is durable. With ``on_durable``, that is
        called synchronously with the writer's answer, before any future's callbacks run.

        Everything submitted in one turn of the loop leaves in one write at its end, urgent or
        not: a write to the writer's socket costs more than the batches in it, and the steps that
        several attempts journal in one turn then share it (and the writer's commit)."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self._lost is not None:
            if on_durable is not None:
                on_durable(self._lost)
            future.set_exception(StoreError(self._lost))
            return future
        if self._resume < self._fence:  # told of a failure, not everyone it concerns yet
            self._loop.call_soon(self._fail_behind_fence, future, on_durable)
            return future
        self._seq += 1
        self._pending.append((self._seq, future, on_durable, self._resume))
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(frame(Submit(self._seq, batch, self._resume)))
        return future

    def _flush(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._outgoing))
            if self._on_commit is not None:
                self._flushes.append((self._seq, self._loop.time()))
        self._outgoing = []

    async def close(self) -> None:
        """Wait for every submitted batch, then hang up (the writer exits when all clients have)."""
        self._closing = True
        if self._pending:
            await asyncio.gather(*(future for _, future, _, _ in list(self._pending)), return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        await self._closed


async def spawn_writer(
    data_dir: str, *, durability: str, map_size: int, blob_threshold: int,
    on_lost: Callable[[str], None] | None = None, on_commit: OnCommit | None = None,
) -> tuple[WriterClient, subprocess.Popen[bytes]]:
    """Start a writer process for this sidecar alone and connect to it."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar.store.writer", "--data-dir", data_dir, "--durability", durability,
         "--map-size", str(map_size), "--blob-threshold", str(blob_threshold), "--fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
    )
    theirs.close()
    return await connect_writer(ours, on_lost, on_commit), process


async def connect_writer(sock: socket.socket, on_lost: Callable[[str], None] | None = None,
                         on_commit: OnCommit | None = None) -> WriterClient:
    client = WriterClient(on_lost, on_commit)
    await asyncio.get_running_loop().create_unix_connection(lambda: client, sock=sock)
    return client
