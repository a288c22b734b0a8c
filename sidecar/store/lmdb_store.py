"""The LMDB store: reads on the event loop, writes through the writer process.

Writes: every change is a :class:`WriteBatch` handed to the writer process, which group-commits
what all its clients sent meanwhile in one synced transaction and answers with what is durable
(see ``writer.py`` for why it is a process). The event loop never waits on fsync.

Reads are short read transactions on the caller's thread: LMDB reads are lock-free memory-mapped
lookups that never wait for the writer. They see committed data only; the invoker keeps whatever
is in flight in memory.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from typing import Protocol
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import msgspec

from handler_sdk.protocol import Entry, encoder as wire_encoder

from . import keys
from .batch import WriteBatch, apply_batch
from .backup import BackupReport, copy_environment
from .blob_memo import BlobMemo
from .blobs import DEFAULT_BLOB_THRESHOLD, decompress, preview, resolve_entry, resolve_stored
from .environment import open_environment, used_bytes
from .txn import store_target
from .layout import prepare
from .records import (
    FINISHED, UNFINISHED, BlobCount, CostRecord, DeploymentRecord, EarlyCompletion, IdempotencyRecord, InvocationRecord,
    NamedState, OutboxEntry, PromiseRecord, ScheduleRecord, WebhookMessage,
)
from .writer_client import OnCommit, OnDurable, StoreError, WriterClient, connect_writer, spawn_writer

__all__ = ["COST_BUDGET", "CostFilter", "CostPage", "LIST_BUDGET", "ListPage", "Store", "StoreError", "encode_entry",
           "encode_record"]

_encoder = msgspec.msgpack.Encoder()
_invocation_decoder = msgspec.msgpack.Decoder(InvocationRecord)
_idempotency_decoder = msgspec.msgpack.Decoder(IdempotencyRecord)
_deployment_decoder = msgspec.msgpack.Decoder(DeploymentRecord)
_named_state_decoder = msgspec.msgpack.Decoder(NamedState)
_early_decoder = msgspec.msgpack.Decoder(EarlyCompletion)
_promise_decoder = msgspec.msgpack.Decoder(PromiseRecord)
_outbox_decoder = msgspec.msgpack.Decoder(OutboxEntry)
_cost_decoder = msgspec.msgpack.Decoder(CostRecord)
_blob_count_decoder = msgspec.msgpack.Decoder(BlobCount)
_webhook_decoder = msgspec.msgpack.Decoder(WebhookMessage)
_schedule_decoder = msgspec.msgpack.Decoder(ScheduleRecord)


def encode_record(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def encode_entry(entry: Entry) -> bytes:
    return wire_encoder.encode(entry)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Takes a failure nobody waits for (it is not an error worth a log line)."""
    if not future.cancelled():
        future.exception()


def _scan_back(cursor: lmdb.Cursor[bytes], prefix: bytes, below: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The entries under ``prefix`` whose rest sorts before ``below``, last first."""
    if cursor.set_range(prefix + below):
        if not cursor.prev():
            return
    elif not cursor.last():
        return
    for key, value in cursor.iterprev():
        if not key.startswith(prefix):
            return
        yield key, value


def _scan(cursor: lmdb.Cursor[bytes], prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


#: Index entries one page of the invocation list reads at most: a few milliseconds of the event loop.
LIST_BUDGET = 1000


class ListPage(msgspec.Struct):
    """A page of the invocation list: its records, and the ID to go on below (``None``: no more)."""

    records: list[InvocationRecord]
    next: str | None


#: ``costs`` keys one page of ``GET /costs`` reads or seeks to at most: a few milliseconds.
COST_BUDGET = 1000


class CostFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which costs to read: each field ``None`` for all. ``since_ms``: recorded then or later."""

    service: str | None = None
    handler: str | None = None
    key: str | None = None
    step: str | None = None
    since_ms: int | None = None


class CostPage(msgspec.Struct):
    """Matching ``costs`` rows in key order (an invocation's rows together), and where the next
    page starts (``None``: no more)."""

    rows: list[CostRecord]
    next: bytes | None


class Committer(Protocol):
    def submit(self, batch: WriteBatch, on_durable: OnDurable | None = None) -> asyncio.Future[None]: ...


class ReplicatedCommitter(Committer, Protocol):
    def serves(self, invocation_id: str) -> bool:
        """Whether this node may start an attempt of ``invocation_id`` now (it still owns its
        partition, as of a recent confirmation)."""
        ...


class Store:
    """Typed access to the sidecar's LMDB environment. No cursor or transaction leaks out."""

    def __init__(self, path: str | Path, *, durability: str = "fsync", map_size: int = 64 * 1024**3,
                 blob_threshold: int = DEFAULT_BLOB_THRESHOLD) -> None:
        self._path = str(path)
        #: Payloads over this many bytes are stored as blobs, once per content (``blobs.py``).
        self.blob_threshold = blob_threshold
        #: Blobs read lately, decompressed: a resume reads the same ones again.
        self.blob_memo = BlobMemo()
        self._durability = durability
        self._map_size = map_size
        self._env, self._dbs = open_environment(path, durability=durability, map_size=map_size)
        #: Signs awakeable IDs; the same in every worker (they share the directory).
        self.awakeable_secret = prepare(self._env, self._dbs, blob_threshold)
        self._writer: WriterClient | None = None
        self._writer_process: subprocess.Popen[bytes] | None = None
        #: Where submitted batches go: the writer, or in cluster mode the log first (``replicate``).
        self._commits: Committer | None = None
        self._replicated: ReplicatedCommitter | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, writer_socket: socket.socket | None = None,
                    on_lost: Callable[[str], None] | None = None, on_commit: OnCommit | None = None) -> None:
        """Connect to a shared writer process over ``writer_socket``, or start one of our own.

        ``on_lost`` is called if the writer dies: nothing more can be made durable, so the owner
        should stop and let a restart recover from what is on disk. ``on_commit`` is told of
        each group commit (see ``writer_client.OnCommit``).
        """
        if writer_socket is not None:
            self._writer = await connect_writer(writer_socket, on_lost, on_commit)
        else:
            self._writer, self._writer_process = await spawn_writer(
                self._path, durability=self._durability, map_size=self._map_size,
                blob_threshold=self.blob_threshold, on_lost=on_lost, on_commit=on_commit)
        self._commits = self._writer

    @property
    def writer(self) -> WriterClient:
        """The local writer itself (cluster mode applies the log's records through it)."""
        assert self._writer is not None, "store not started"
        return self._writer

    def replicate(self, commits: ReplicatedCommitter) -> None:
        """Send every later submit through ``commits`` (cluster mode: the log, then the writer)."""
        self._commits = self._replicated = commits

    def serves(self, invocation_id: str) -> bool:
        """Whether an attempt of ``invocation_id`` may start here now: always on one machine; in
        cluster mode while this node's hold on its partition is confirmed (a node paused past its
        lease must not run steps from a journal another node has moved on)."""
        return self._replicated is None or self._replicated.serves(invocation_id)

    async def close(self) -> None:
        """Let every submitted write finish, stop our writer, close the environment."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._writer_process is not None:
            await asyncio.to_thread(self._writer_process.wait)
            self._writer_process = None
        self.close_environment()

    def copy_to(self, destination: str | Path) -> BackupReport:
        """A compacted copy of the store in the new directory ``destination`` (``sidecar backup``'s)."""
        return copy_environment(self._env, destination)

    def close_environment(self) -> None:
        """Close the environment of a store that never started a writer (tools, the supervisor)."""
        self._env.close()

    @property
    def full(self) -> bool:
        """A write failed for want of room (map or disk full) and none has committed since."""
        return self._writer is not None and self._writer.full

    def probe(self) -> None:
        """While the store is ``full``: a small write, whose commit tells that there is room again."""
        if self.full:
            batch = WriteBatch()
            batch.put("meta", b"probe", b"")
            self.submit(batch).add_done_callback(_retrieve)

    @property
    def commits(self) -> tuple[int, int]:
        """(group commits, batches they carried) so far: their ratio is the mean group size."""
        if self._writer is None:
            return (0, 0)
        return (self._writer.commits, self._writer.batches_committed)

    # --- writes ---------------------------------------------------------------------------------

    def submit(self, batch: WriteBatch, on_durable: OnDurable | None = None) -> asyncio.Future[None]:
        """Queue ``batch``; the future resolves once it is durable. Batches commit in submit order.
        ``on_durable``: for a write someone is blocked on (see ``WriterClient.submit``)."""
        assert self._commits is not None, "store not started"
        return self._commits.submit(batch, on_durable)

    def partition_count(self, default: int) -> int:
        """The data directory's number of partitions, fixed by whoever opens it first."""
        raw = self._get("meta", b"partitions")
        if raw is not None:
            return int(raw)
        batch = WriteBatch()
        batch.put("meta", b"partitions", str(default).encode())
        self.write_now(batch)
        return default

    def write_now(self, batch: WriteBatch) -> None:
        """Apply one batch synchronously, bypassing the writer (tools and tests only)."""
        with self._env.begin(write=True) as txn:
            apply_batch(store_target(txn, self._dbs, self.blob_threshold), batch)

    # --- reads ----------------------------------------------------------------------------------

    def read_meta(self, key: bytes) -> bytes | None:
        return self._get("meta", key)

    def _get(self, db: str, key: bytes) -> bytes | None:
        """The value under ``key``, with the payloads it refers to as blobs in it."""
        with self._env.begin() as txn:
            raw = txn.get(key, db=self._dbs[db])
            return None if raw is None else self._resolved(txn, db, key, raw)

    def _resolved(self, txn: lmdb.Transaction[bytes], db: str, key: bytes, raw: bytes) -> bytes:
        """``raw`` (a value of ``db``) as it was written: each blob reference replaced by its bytes."""
        return resolve_stored(db, key, raw, self._fetcher(txn))

    def _fetcher(self, txn: lmdb.Transaction[bytes]) -> Callable[[bytes], bytes]:
        """A blob's bytes by SHA-256, read in ``txn`` unless the memo has them."""
        blobs, memo = self._dbs["blobs"], self.blob_memo

        def fetch(sha: bytes) -> bytes:
            data = memo.get(sha)
            if data is None:
                data = decompress(sha, txn.get(sha, db=blobs))
                memo.put(sha, data)
            return data

        return fetch

    def read_blob(self, sha256: bytes) -> bytes | None:
        """The bytes of the blob with this SHA-256, or ``None`` if none is stored."""
        with self._env.begin(db=self._dbs["blobs"]) as txn:
            stored = txn.get(sha256)
            return None if stored is None else decompress(sha256, stored)

    def blob_preview(self, sha256: bytes, size: int) -> bytes:
        """The first ``size`` bytes of a stored blob (empty if it is not stored)."""
        with self._env.begin(db=self._dbs["blobs"]) as txn:
            stored = txn.get(sha256)
            return b"" if stored is None else preview(stored, size)

    def blob_counts(self) -> dict[bytes, BlobCount]:
        """Every stored blob's reference count and size, by SHA-256 (tools and tests)."""
        with self._env.begin(db=self._dbs["blob_refs"]) as txn:
            return {bytes(k): _blob_count_decoder.decode(v) for k, v in txn.cursor()}

    def blob_stats(self) -> tuple[int, int]:
        """(blobs stored, bytes their database's pages take): cheap, from LMDB's statistics."""
        with self._env.begin() as txn:
            stat = txn.stat(self._dbs["blobs"])
        pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return stat["entries"], pages * stat["psize"]

    def size_stats(self) -> tuple[int, int, int]:
        """(bytes the data file takes on disk, bytes its live pages hold, the map size writes may
        fill): what an operator watches to see a store fill before writes are refused."""
        file_bytes = os.stat(os.path.join(self._path, "data.mdb")).st_size
        return file_bytes, used_bytes(self._env, self._dbs), self._map_size

    def blob_bytes_stored(self) -> int:
        """What the stored blobs take, compressed (their values' bytes)."""
        with self._env.begin(db=self._dbs["blobs"]) as txn:
            return sum(len(v) for v in txn.cursor().iternext(keys=False, values=True))

    def get_invocation(self, invocation_id: str) -> InvocationRecord | None:
        raw = self._get("invocations", invocation_id.encode())
        return None if raw is None else _invocation_decoder.decode(raw)

    def read_journal(self, invocation_id: str, start: int = 0) -> list[Entry]:
        """The journal's dense prefix (from entry ``start``, for a caller that read the entries
        before it already). Entries past a gap (a later write of a failed attempt that committed
        after an earlier one failed) are not part of it; the next attempt overwrites them."""
        journal: list[Entry] = []
        prefix = keys.journal_prefix(invocation_id)
        with self._env.begin(db=self._dbs["journal"]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(keys.journal_key(invocation_id, start)):
                return journal
            fetch = self._fetcher(txn)
            for raw_key, value in cursor:
                if not raw_key.startswith(prefix) or keys.journal_index(raw_key) != start + len(journal):
                    break
                journal.append(resolve_entry(value, fetch))
        return journal

    def has_entry(self, invocation_id: str, index: int) -> bool:
        """Whether the journal holds entry ``index`` (one read, whatever the journal's length)."""
        with self._env.begin(db=self._dbs["journal"]) as txn:
            return txn.get(keys.journal_key(invocation_id, index)) is not None

    def read_state(self, service: str, key: str) -> dict[str, bytes]:
        prefix = keys.object_prefix(service, key)
        state: dict[str, bytes] = {}
        with self._env.begin() as txn:
            for raw_key, value in _scan(txn.cursor(db=self._dbs["state"]), prefix):
                value = self._resolved(txn, "state", raw_key, value)
                name = keys.state_name(prefix, raw_key)
                if name is None:  # too long for the key, which holds its hash: the value has it
                    named = _named_state_decoder.decode(value)
                    name, value = named.name, named.value
                state[name] = value
        return state

    def get_idempotency(self, raw_key: bytes) -> IdempotencyRecord | None:
        raw = self._get("idempotency", raw_key)
        return None if raw is None else _idempotency_decoder.decode(raw)

    def list_invocations(
        self, *, status: str | None = None, service: str | None = None, key: str | None = None, limit: int = 100,
        before: str | None = None, budget: int = LIST_BUDGET,
    ) -> ListPage:
        """One page of the invocation list, newest first (IDs sort by creation time), from IDs
        below ``before``: at most ``limit`` records, found among at most ``budget`` index entries,
        so that one page is bounded work and one short read transaction however little matches.

        The walk follows the index that fits (``by_status`` for a status, ``by_target`` for a
        service, else every record). For a status an unfinished invocation can leave (pending,
        running, ...), every unfinished invocation is a candidate: what is stored may lag (running
        is never written), the live record tells; the caller filters."""
        if status is not None and (status not in FINISHED or service is None):
            db, prefix = "by_status", keys.status_prefix(status if status in FINISHED else UNFINISHED)
        elif service is not None:
            db, prefix = "by_target", keys.target_prefix(service, key)
        else:
            db, prefix = "invocations", b""

        def may_match(record: InvocationRecord) -> bool:
            return (service is None or record.service == service) and (key is None or record.key == key) and (
                status is None or record.status == status or (status not in FINISHED and not record.finished))

        found: list[InvocationRecord] = []
        examined = 0
        last = b""
        with self._env.begin() as txn:
            records = self._dbs["invocations"]
            for raw_key, value in _scan_back(txn.cursor(db=self._dbs[db]), prefix,
                                             before.encode() if before else b"\xff"):
                if len(found) >= limit or examined >= budget:  # and there is more: go on below the last one
                    return ListPage(found, last.decode())
                invocation_id = last = raw_key[len(prefix):]
                examined += 1
                raw = value if db == "invocations" else txn.get(invocation_id, db=records)
                if raw is None:
                    continue
                record = _invocation_decoder.decode(raw)
                if may_match(record):
                    found.append(record)
        return ListPage(found, None)

    def read_costs(self, wanted: CostFilter, *, start: bytes = b"", budget: int = COST_BUDGET) -> CostPage:
        """One page of the ``costs`` rows that match ``wanted``, from key ``start`` on: at most
        ``budget`` keys read or sought to, in one short read transaction.

        The walk reads only the range of the given service (and handler, and key), and seeks past
        what cannot match instead of reading it: a key without its handler is one seek per handler
        of the service, a handler without its service one per service. Step and time are in the
        values: every row of the range is read for them (see ``keys`` for why)."""
        want = [None if wanted.service is None else keys.cost_component(wanted.service),
                None if wanted.handler is None else keys.cost_component(wanted.handler),
                None if wanted.key is None else keys.cost_key_part(wanted.key)]
        prefix = b""
        for part in want:
            if part is None:
                break
            prefix += part
        rows: list[CostRecord] = []
        with self._env.begin(db=self._dbs["costs"]) as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(max(start, prefix))
            for _ in range(budget):
                raw_key = cursor.key()
                if not positioned or not raw_key.startswith(prefix):
                    return CostPage(rows, None)
                found = keys.split_cost_key(raw_key)
                level = next((i for i, part in enumerate(want) if part is not None and found[i] != part), None)
                if level is not None:  # seek to where it may match: its part further on, or past the parts above
                    above = b"".join(found[:level])
                    part = want[level]
                    assert part is not None
                    target = above + part if found[level] < part else keys.after_prefix(above)
                    positioned = target is not None and cursor.set_range(target)
                    continue
                row = _cost_decoder.decode(cursor.value())
                if (wanted.step is None or row.step == wanted.step) and (
                        wanted.since_ms is None or row.recorded_ms >= wanted.since_ms):
                    rows.append(row)
                positioned = cursor.next()
            return CostPage(rows, cursor.key() if positioned and cursor.key().startswith(prefix) else None)

    def scan_inbox(self) -> list[str]:
        """Every unfinished invocation's ID, in arrival order per key."""
        with self._env.begin(db=self._dbs["inbox"]) as txn:
            return [keys.inbox_invocation_id(k) for k in txn.cursor().iternext(keys=True, values=False)]

    def finished_before(self, cutoff_ms: int, limit: int) -> list[str]:
        """IDs of invocations that finished before ``cutoff_ms``, oldest first."""
        ids: list[str] = []
        with self._env.begin(db=self._dbs["finished"]) as txn:
            for raw in txn.cursor().iternext(keys=True, values=False):
                if keys.finished_key_time(raw) >= cutoff_ms or len(ids) >= limit:
                    break
                ids.append(raw[8:].decode())
        return ids

    def timers(self) -> list[tuple[int, str, int]]:
        """Every pending timer as ``(due_ms, invocation_id, index)``, earliest first."""
        with self._env.begin(db=self._dbs["timers"]) as txn:
            return [keys.split_timer_key(k) for k in txn.cursor().iternext(keys=True, values=False)]

    def early_completions(self) -> list[tuple[str, int, EarlyCompletion]]:
        with self._env.begin(db=self._dbs["completions"]) as txn:
            return [(k[:-5].decode(), keys.journal_index(k), _early_decoder.decode(self._resolved(txn, "completions", k, v)))
                    for k, v in txn.cursor()]

    def get_promise(self, service: str, key: str, name: str) -> PromiseRecord | None:
        raw = self._get("promises", keys.state_key(service, key, name))
        return None if raw is None else _promise_decoder.decode(raw)

    def outbox(self) -> list[OutboxEntry]:
        with self._env.begin(db=self._dbs["outbox"]) as txn:
            return [_outbox_decoder.decode(self._resolved(txn, "outbox", k, v)) for k, v in txn.cursor()]

    def webhook_keys(self, tag: bytes, after: bytes | None, limit: int) -> list[bytes]:
        """Up to ``limit`` keys of receiver ``tag``'s webhooks, in filing order, after ``after``
        (a key of that range; ``None``: from the first)."""
        found: list[bytes] = []
        with self._env.begin(db=self._dbs["webhook_outbox"]) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(after if after is not None else tag):
                return found
            for raw in cursor.iternext(keys=True, values=False):
                if not raw.startswith(tag) or len(found) >= limit:
                    break
                if raw != after:
                    found.append(bytes(raw))
        return found

    def webhook_messages(self, raw_keys: list[bytes]) -> list[WebhookMessage | None]:
        """The webhooks filed under ``raw_keys`` (``None`` where one is gone), in one read."""
        with self._env.begin(db=self._dbs["webhook_outbox"]) as txn:
            return [None if (raw := txn.get(k)) is None else _webhook_decoder.decode(raw) for k in raw_keys]

    def last_webhook_seq(self, tag: bytes) -> int:
        """The highest seq filed for receiver ``tag`` (0: none)."""
        past = keys.after_prefix(tag)
        with self._env.begin(db=self._dbs["webhook_outbox"]) as txn:
            cursor = txn.cursor()
            found = cursor.prev() if past is not None and cursor.set_range(past) else cursor.last()
            if not found or not cursor.key().startswith(tag):
                return 0
            return keys.split_webhook_key(bytes(cursor.key()))[1]

    def webhook_tags(self) -> list[bytes]:
        """The receiver tags that have webhooks filed: one seek per tag."""
        tags: list[bytes] = []
        with self._env.begin(db=self._dbs["webhook_outbox"]) as txn:
            cursor = txn.cursor()
            found = cursor.first()
            while found:
                tags.append(bytes(cursor.key()[:keys.WEBHOOK_TAG_BYTES]))
                past = keys.after_prefix(tags[-1])
                found = past is not None and cursor.set_range(past)
        return tags

    def list_deployments(self) -> list[DeploymentRecord]:
        with self._env.begin(db=self._dbs["deployments"]) as txn:
            return [_deployment_decoder.decode(v) for _, v in txn.cursor()]

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        raw = self._get("schedules", keys.schedule_key(name))
        return None if raw is None else _schedule_decoder.decode(raw)

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, sorted by name."""
        with self._env.begin(db=self._dbs["schedules"]) as txn:
            return sorted((_schedule_decoder.decode(v) for v in txn.cursor().iternext(keys=False)),
                          key=lambda record: record.name)
