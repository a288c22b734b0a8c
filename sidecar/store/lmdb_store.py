"""The LMDB store: one environment, named databases, one writer thread that group-commits.

Why a writer thread: an LMDB write transaction must stay on the thread that began it, and a synced
commit blocks for an fsync. The event loop therefore only enqueues batches; the writer drains
everything that queued up while the previous commit was syncing and commits it all in one
transaction, so at high concurrency one fsync covers many invocations' appends.

Reads are short read transactions on the caller's thread: LMDB reads are lock-free memory-mapped
lookups, and a read never waits for the writer. They see committed data only; the invoker keeps
whatever is in flight in memory.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgspec

from handler_sdk.protocol import Entry, encoder as wire_encoder, entry_decoder

from . import keys
from .batch import WriteBatch, apply_batch
from .records import DeploymentRecord, IdempotencyRecord, InboxEntry, InvocationRecord

log = logging.getLogger(__name__)

DATABASES = ("invocations", "journal", "state", "inbox", "idempotency", "finished", "deployments", "meta")

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_invocation_decoder = msgspec.msgpack.Decoder(InvocationRecord)
_idempotency_decoder = msgspec.msgpack.Decoder(IdempotencyRecord)
_deployment_decoder = msgspec.msgpack.Decoder(DeploymentRecord)
_inbox_decoder = msgspec.msgpack.Decoder(InboxEntry)


class StoreError(RuntimeError):
    """A write could not be made durable (disk full, map full, closed store)."""


def encode_record(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def encode_entry(entry: Entry) -> bytes:
    return wire_encoder.encode(entry)


class _TxnTarget:
    """Adapts an LMDB write transaction to :class:`batch.Target`."""

    __slots__ = ("txn", "dbs")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self.txn = txn
        self.dbs = dbs

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[db])

    def delete(self, db: str, key: bytes) -> None:
        self.txn.delete(key, db=self.dbs[db])

    def keys_with_prefix(self, db: str, prefix: bytes) -> list[bytes]:
        return list(_scan_keys(self.txn.cursor(db=self.dbs[db]), prefix))


def _scan_keys(cursor: lmdb.Cursor, prefix: bytes) -> Iterator[bytes]:
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key


def _scan(cursor: lmdb.Cursor, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


class _Pending:
    __slots__ = ("batch", "future")

    def __init__(self, batch: WriteBatch, future: asyncio.Future[None]) -> None:
        self.batch = batch
        self.future = future


_STOP = object()


class Store:
    """Typed access to the sidecar's LMDB environment. No cursor or transaction leaks out."""

    def __init__(self, path: str | Path, *, durability: str = "fsync", map_size: int = 64 * 1024**3) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        synced = durability == "fsync"
        self._env = lmdb.open(
            str(path), map_size=map_size, max_dbs=len(DATABASES) + 1, sync=synced, metasync=synced,
            max_spare_txns=4,
        )
        self._dbs = {name: self._env.open_db(name.encode()) for name in DATABASES}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        #: Group-commit statistics, read by the metrics endpoint and the benchmarks.
        self.commits = 0
        self.batches_committed = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writer = threading.Thread(target=self._write_loop, name="lmdb-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Finish every queued write, then close the environment."""
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        self._env.close()

    # --- writes ---------------------------------------------------------------------------------

    def submit(self, batch: WriteBatch) -> asyncio.Future[None]:
        """Queue ``batch``; the future resolves once it is durable. Batches commit in submit order."""
        assert self._loop is not None, "store not started"
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(_Pending(batch, future))
        return future

    def write_now(self, batch: WriteBatch) -> None:
        """Apply one batch synchronously (start-up and tools, before the writer runs)."""
        with self._env.begin(write=True) as txn:
            apply_batch(_TxnTarget(txn, self._dbs), batch)

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            group = [self._queue.get()]
            while True:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if group[-1] is _STOP or _STOP in group:
                stopping = True
                group = [item for item in group if item is not _STOP]
            if group:
                self._commit_group(group)

    def _commit_group(self, group: list[_Pending]) -> None:
        try:
            with self._env.begin(write=True) as txn:
                target = _TxnTarget(txn, self._dbs)
                for pending in group:
                    apply_batch(target, pending.batch)
            results: list[BaseException | None] = [None] * len(group)
        except lmdb.Error:
            # One bad batch must not fail its neighbours: retry each on its own.
            results = [self._commit_alone(pending.batch) for pending in group]
        self.commits += 1
        self.batches_committed += len(group)
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, group, results)
        except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
            pass

    def _commit_alone(self, batch: WriteBatch) -> BaseException | None:
        try:
            with self._env.begin(write=True) as txn:
                apply_batch(_TxnTarget(txn, self._dbs), batch)
        except lmdb.Error as exc:
            log.error("write failed: %s", exc)
            return StoreError(f"write failed: {exc}")
        return None

    # --- reads ----------------------------------------------------------------------------------

    def _get(self, db: str, key: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs[db]) as txn:
            return txn.get(key)

    def get_invocation(self, invocation_id: str) -> InvocationRecord | None:
        raw = self._get("invocations", invocation_id.encode())
        return None if raw is None else _invocation_decoder.decode(raw)

    def read_journal(self, invocation_id: str) -> list[Entry]:
        """The journal's dense prefix. Entries past a gap (a later write of a failed attempt that
        committed after an earlier one failed) are not part of it; the next attempt overwrites them."""
        journal: list[Entry] = []
        with self._env.begin(db=self._dbs["journal"]) as txn:
            for raw_key, value in _scan(txn.cursor(), keys.journal_prefix(invocation_id)):
                if keys.journal_index(raw_key) != len(journal):
                    break
                journal.append(entry_decoder.decode(value))
        return journal

    def read_state(self, service: str, key: str) -> dict[str, bytes]:
        prefix = keys.object_prefix(service, key)
        with self._env.begin(db=self._dbs["state"]) as txn:
            return {keys.state_name(prefix, k): v for k, v in _scan(txn.cursor(), prefix)}

    def get_idempotency(self, raw_key: bytes) -> IdempotencyRecord | None:
        raw = self._get("idempotency", raw_key)
        return None if raw is None else _idempotency_decoder.decode(raw)

    def list_invocations(
        self, *, status: str | None = None, service: str | None = None, key: str | None = None, limit: int = 100,
        live: Mapping[str, InvocationRecord] | None = None,
    ) -> list[InvocationRecord]:
        """Newest first (IDs sort by creation time), filtered; ``live`` records replace stored ones."""
        found: list[InvocationRecord] = []
        with self._env.begin(db=self._dbs["invocations"]) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return found
            for raw_id, raw in cursor.iterprev():
                record = (live or {}).get(raw_id.decode()) or _invocation_decoder.decode(raw)
                if (status is None or record.status == status) and (service is None or record.service == service) \
                        and (key is None or record.key == key):
                    found.append(record)
                    if len(found) >= limit:
                        break
        return found

    def scan_inbox(self) -> list[tuple[str, str | None, str, bool]]:
        """Every unfinished invocation as ``(service, key, id, exclusive)``, in arrival order per key."""
        with self._env.begin(db=self._dbs["inbox"]) as txn:
            return [(*keys.split_inbox_key(k), _inbox_decoder.decode(v).exclusive) for k, v in txn.cursor()]

    def finished_before(self, cutoff_ms: int, limit: int) -> list[str]:
        """IDs of invocations that finished before ``cutoff_ms``, oldest first."""
        ids: list[str] = []
        with self._env.begin(db=self._dbs["finished"]) as txn:
            for raw in txn.cursor().iternext(keys=True, values=False):
                if keys.finished_key_time(raw) >= cutoff_ms or len(ids) >= limit:
                    break
                ids.append(raw[8:].decode())
        return ids

    def list_deployments(self) -> list[DeploymentRecord]:
        with self._env.begin(db=self._dbs["deployments"]) as txn:
            return [_deployment_decoder.decode(v) for _, v in txn.cursor()]

    def get_meta(self, name: str) -> bytes | None:
        return self._get("meta", name.encode())


def _resolve(group: list[_Pending], results: list[BaseException | None]) -> None:
    for pending, error in zip(group, results):
        if pending.future.done():
            continue
        if error is None:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(error)
