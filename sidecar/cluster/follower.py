"""A standby's half of replication: apply other nodes' records to this node's LMDB as they come.

Every node follows the whole log, so every node's store holds every partition (a takeover is a
catch-up of the last few records, not a restore). Records of partitions this node owns are its
own, applied by its commit path, and skipped here; a record already applied (its sequence at or
below the partition's ``applied`` mark, written in the same transaction as the record) is skipped
too, so a restart resumes from the lowest mark and applies nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from ..store import Store
from ..store.writer_client import WriterClient
from .changelog import Changelog, DamagedRecord, decode_record
from ..store.batch import WriteBatch
from .commits import applied_key, applied_put, with_sequence
from .tasks import stop_tasks

log = logging.getLogger(__name__)


def applied_marks(store: Store, partitions: int) -> dict[int, int]:
    """The sequence of each partition's last record this store holds (0: none)."""
    marks = {}
    for partition in range(partitions):
        raw = store.read_meta(applied_key(partition))
        marks[partition] = int.from_bytes(raw, "big") if raw else 0
    return marks


class Follower:
    def __init__(self, *, log: Changelog, store: Store, writer: WriterClient, partitions: int,
                 owns: Callable[[int], bool], on_stop: Callable[[str], None]) -> None:
        self._log = log
        self._writer = writer
        self._owns = owns
        self._on_stop = on_stop
        self._applied = applied_marks(store, partitions + 1)  # and the shared records
        #: Every record up to here is applied locally (committed), or skipped.
        self.position = min(self._applied.values(), default=0)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        #: Follower writes submitted and not yet committed, and the last record skipped behind them.
        self._writing = 0
        self._skipped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            await stop_tasks(self._task)

    async def reached(self, sequence: int) -> None:
        """Return once every record up to ``sequence`` is applied here (or is this node's own)."""
        if self.position >= sequence:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((sequence, future))
        await future

    def checkpoint(self, sequence: int, owned: dict[int, int]) -> asyncio.Future[None]:
        """Every record up to ``sequence`` is applied here: raise every partition's mark to it, so
        that a restart (or a node restored from this store) starts there, however long a quiet
        partition has gone without a record. ``owned``: the partitions the commit path applies,
        each with the last record it handed to the writer (its mark then says at least that).
        Submitted in the same step that reads the marks: whatever is submitted later lands after."""
        assert sequence <= self.position
        raise_to = WriteBatch()
        for partition, mark in self._applied.items():
            if partition in owned:
                raise_to.ops.append(applied_put(partition, max(sequence, owned[partition])))
            elif mark < sequence and not self._owns(partition):
                self._applied[partition] = sequence
                raise_to.ops.append(applied_put(partition, sequence))
        return self._writer.submit(raise_to)

    async def _follow(self) -> None:
        try:
            async for entry in self._log.read_from(self.position + 1):
                partition, sequence = entry.partition, entry.sequence
                if sequence > self._applied.get(partition, 0) and not self._owns(partition):
                    record = decode_record(entry.payload)
                    self._applied[partition] = sequence
                    self._writing += 1
                    written = self._writer.submit(with_sequence(record, sequence))
                    written.add_done_callback(partial(self._written, sequence))
                elif self._writing:  # counts once the writes before it are committed
                    self._skipped = sequence
                else:
                    self._advance(sequence)
        except DamagedRecord as exc:
            self._on_stop(f"the log holds a damaged record: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("following the log failed")
            self._on_stop(f"following the log failed: {exc}")

    def _written(self, sequence: int, done: asyncio.Future[None]) -> None:
        """A follower write committed (the writer answers in submit order)."""
        self._writing -= 1
        if done.cancelled() or done.exception() is not None:
            self._on_stop(f"a replicated write could not be applied here: {done.exception() if not done.cancelled() else 'cancelled'}")
            return
        self._advance(sequence)
        if not self._writing:
            self._advance(self._skipped)

    def _advance(self, sequence: int) -> None:
        if sequence <= self.position:
            return
        self.position = sequence
        still = []
        for target, future in self._waiters:
            if target <= sequence:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still
