"""Cluster mode's commit path: a batch is durable once its partition's log took it.

Each partition this node owns has at most one append in flight; the batches submitted meanwhile
wait and go together in its next record (group commit per partition: an R3 append costs
milliseconds, so one per batch would cap a hot key at a few hundred writes a second). An append
carries the sequence of the partition's last record as this node knows it, the fence: if another
node claimed the partition since, the log refuses it and this node stops at once. Only after the
append are the batches applied to the local LMDB, with the record's sequence in the same
transaction, and only then do their futures resolve: nothing is acknowledged that the log does not
hold. A partition's records are applied in order; different partitions' interleave freely (their
keys are disjoint, and blob reference counts, the one thing they share, are counted where they are
applied and commute).

After anything goes wrong between the log and LMDB (fenced, the log unreachable past its retries,
a local write failing for a record the log holds) nothing more is acknowledged: every pending and
later batch fails, and the node is told to stop; a restart applies the log from what LMDB holds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable

from ..ids import partition_of_id
from ..store.batch import DeletePrefix, Put, WriteBatch
from ..store.keys import MAX_KEY_BYTES
from ..store.writer_client import OnDurable, StoreError, WriterClient
from .batch_partition import MixedBatch, batch_partition
from .changelog import Changelog, Fenced, LogRecord, LogUnavailable, encode_record

log = logging.getLogger(__name__)


def applied_key(partition: int) -> bytes:
    """The ``meta`` key holding the sequence of the last record of ``partition`` applied here."""
    return b"applied/" + partition.to_bytes(2, "big")


def applied_put(partition: int, sequence: int) -> Put:
    return Put("meta", applied_key(partition), sequence.to_bytes(8, "big"))


def with_sequence(record: LogRecord, sequence: int) -> WriteBatch:
    """A record's batches as one batch, ending with its sequence: applied whole or not at all."""
    ops = [op for batch in record.batches for op in batch.ops]
    ops.append(applied_put(record.partition, sequence))
    return WriteBatch(ops)


_Waiting = tuple[WriteBatch, "asyncio.Future[None]", OnDurable | None]


class ReplicatedCommits:
    def __init__(self, *, log: Changelog, writer: WriterClient, node: str, partitions: int,
                 owned: dict[int, int], on_stop: Callable[[str], None], shared_applied: Callable[[int], Awaitable[None]],
                 confirmed: Callable[[int], bool] = lambda partition: True, record_limit: int = 1 << 20) -> None:
        """``owned``: each partition this node has claimed, with its last record's sequence;
        ``shared_applied``: returns once the follower applied the log up to a sequence (the shared
        records, partition number ``partitions``, are applied by it alone); ``record_limit``: the
        most bytes of batches one record carries (the log's message limit, less the framing);
        ``confirmed``: whether this node's hold on a partition was confirmed lately (``serves``)."""
        self._shared_applied = shared_applied
        self._confirmed = confirmed
        self._record_limit = record_limit
        self._log = log
        self._writer = writer
        self._node = node
        self._partitions = partitions
        self._last = dict(owned)
        #: Each owned partition's last record that is applied here too (a checkpoint reaches that far),
        #: and the last one handed to the writer (what its ``applied`` mark will say once written).
        self.applied = dict(owned)
        self.handed = dict(owned)
        self._on_stop = on_stop
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[int, deque[_Waiting]] = {p: deque() for p in [*owned, partitions]}
        self._appending: set[int] = set()
        #: Each partition's newest future (and the local writes'): what an empty batch waits for.
        self._newest: dict[int, asyncio.Future[None]] = {}
        self._stopped: str | None = None
        #: Message IDs: this process's prefix and a counter, unique per append (a retry keeps its ID).
        self._prefix = f"{node}.{secrets.token_hex(6)}."
        self._count = 0

    @property
    def stopped(self) -> str | None:
        return self._stopped

    def _too_large(self, batch: WriteBatch) -> str | None:
        size = _size(batch)
        if size <= self._record_limit:
            return None
        return (f"a write of {size} bytes is larger than the log takes in one record ({self._record_limit}): "
                "raise the NATS servers' max_payload, or keep step and state values smaller")

    def owns(self, partition: int) -> bool:
        return partition in self._last

    def settled_below(self, limit: int) -> int:
        """The highest sequence (up to ``limit``) through which every owned partition's records
        are applied here: an idle partition's are all applied, a busy one's up to its last."""
        busy = [self.applied[p] for p in self._last if p in self._appending or self.applied[p] != self.handed[p]]
        return min([limit, *busy])

    def serves(self, invocation_id: str) -> bool:
        """Whether an attempt of ``invocation_id`` may start: not after a stop, nor while this
        node's hold on the partition is not confirmed (``confirmed``)."""
        partition = partition_of_id(invocation_id)
        return self._stopped is None and partition is not None and self._confirmed(partition)

    def submit(self, batch: WriteBatch, on_durable: OnDurable | None = None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        if self._stopped is not None:
            return _failed(future, on_durable, StoreError(self._stopped))
        if not batch.ops and not batch.home:  # a barrier: everything submitted before it is durable
            return self._barrier(future, on_durable)
        try:
            partition = batch_partition(batch, self._partitions)
        except MixedBatch as exc:
            log.error("a write that cannot be replicated: %s", exc)
            return _failed(future, on_durable, StoreError(str(exc), refused=True))
        if partition is None:  # deployments: in every partition's node, any node may write them
            partition = self._partitions
        elif partition not in self._last:
            return _failed(future, on_durable, StoreError(f"partition {partition} is not served by this node"))
        bad = _unstorable(batch) or self._too_large(batch)
        if bad is not None:
            return _failed(future, on_durable, StoreError(bad, refused=True))
        self._waiting[partition].append((batch, future, on_durable))
        self._newest[partition] = future
        if partition not in self._appending:
            self._appending.add(partition)
            asyncio.ensure_future(self._append(partition))
        return future

    def _barrier(self, future: asyncio.Future[None], on_durable: OnDurable | None) -> asyncio.Future[None]:
        before = [f for f in self._newest.values() if not f.done()]

        def settle(_: object = None) -> None:
            if not future.done():
                if on_durable is not None:
                    on_durable(self._stopped)
                if self._stopped is None:
                    future.set_result(None)
                else:
                    future.set_exception(StoreError(self._stopped))

        if not before:
            self._loop.call_soon(settle)
        else:
            asyncio.gather(*before, return_exceptions=True).add_done_callback(settle)
        return future

    async def _append(self, partition: int) -> None:
        """Append and apply the partition's waiting batches, a record at a time, until none wait."""
        waiting = self._waiting[partition]
        try:
            while waiting and self._stopped is None:
                group = self._next_group(waiting)
                record = LogRecord(partition=partition, node=self._node, batches=[b for b, _, _ in group])
                self._count += 1
                shared = partition == self._partitions
                try:
                    sequence = await self._log.append(
                        partition, encode_record(record), expected=None if shared else self._last[partition],
                        message_id=f"{self._prefix}{self._count}")
                except Fenced:
                    log.error("partition %d was claimed by another node: this node acknowledges nothing more", partition)
                    self.stop(f"partition {partition} was claimed by another node: this node stops serving it")
                except LogUnavailable as exc:
                    log.error("the log did not take a write: %s", exc)
                    self.stop(f"the log did not take a write: {exc}")
                except Exception as exc:  # whatever else the client raises: nothing is known stored
                    log.exception("append to partition %d failed", partition)
                    self.stop(f"the log did not take a write: {exc}")
                if self._stopped is not None:
                    _fail_all(group, self._stopped)
                    break
                try:
                    if shared:  # applied here as everywhere: by the follower, in log order
                        await self._shared_applied(sequence)
                    else:
                        self._last[partition] = self.handed[partition] = sequence
                        await self._writer.submit(with_sequence(record, sequence))
                        self.applied[partition] = sequence
                except StoreError as exc:
                    log.error("a replicated write could not be applied here: %s", exc)
                    self.stop(f"a replicated write could not be applied here: {exc}")
                    _fail_all(group, self._stopped or str(exc))
                    break
                for _, future, on_durable in group:
                    if on_durable is not None and not future.done():
                        on_durable(None)
                for _, future, _ in group:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._appending.discard(partition)
            if self._stopped is not None:
                _fail_all(list(waiting), self._stopped)
                waiting.clear()

    def _next_group(self, waiting: deque[_Waiting]) -> list[_Waiting]:
        """The batches of the next record: as many waiting ones as fit in one append."""
        group: list[_Waiting] = []
        size = 0
        while waiting:
            need = _size(waiting[0][0])
            if group and size + need > self._record_limit:
                break
            group.append(waiting.popleft())
            size += need
        return group

    def stop(self, reason: str) -> None:
        """Acknowledge nothing more: fail what waits and every later batch; tell the node."""
        if self._stopped is not None:
            return
        self._stopped = reason
        for waiting in self._waiting.values():
            _fail_all(list(waiting), reason)
            waiting.clear()
        self._on_stop(reason)


def _size(batch: WriteBatch) -> int:
    """About the bytes ``batch`` takes in a record (keys and values; the framing is small)."""
    return sum(len(op.key) + len(op.value) + 16 if type(op) is Put else 64 for op in batch.ops)


def _unstorable(batch: WriteBatch) -> str | None:
    """Why LMDB would refuse ``batch`` (checked before the log holds it, or every replica would)."""
    for op in batch.ops:
        if type(op) is not DeletePrefix and not 0 < len(op.key) <= MAX_KEY_BYTES:
            return f"the store cannot hold this write: a key of {len(op.key)} bytes"
    return None


def _failed(future: asyncio.Future[None], on_durable: OnDurable | None, error: StoreError) -> asyncio.Future[None]:
    if on_durable is not None:
        on_durable(str(error))
    future.set_exception(error)
    return future


def _fail_all(group: list[_Waiting], reason: str) -> None:
    for _, future, on_durable in group:
        if not future.done():
            if on_durable is not None:
                on_durable(reason)
            future.set_exception(StoreError(reason))
