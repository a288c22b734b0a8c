"""Opening the LMDB environment and committing groups of write batches to it.

Shared by the writer process (which commits) and the sidecar (which reads, and writes directly
only in tools and tests).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from .batch import WriteBatch, apply_batch
from .check import check_data_dir
from .layout import LayoutError, refuse_newer_layout
from .txn import store_target

log = logging.getLogger(__name__)

DATABASES = (
    "invocations", "journal", "state", "inbox", "idempotency", "finished", "deployments", "meta", "timers",
    "completions", "promises", "outbox", "by_status", "by_target", "costs", "blobs", "blob_refs",
    "webhook_outbox", "schedules",
)


def headroom(map_size: int) -> int:
    """Bytes mapped past ``map_size`` that only deletes may fill.

    Found by trying: in a map that small writes filled, LMDB cannot commit deletes for long
    (each copies the pages it changes, and pages a commit frees are reused only after the next
    one), so a store full of small records could never be purged. The writer refuses writes
    that would take the data past ``map_size`` (see ``writer.py``); purges and the commits that
    free their pages run in the headroom. The map is virtual: the file grows only as it fills.
    """
    return max(4 << 20, map_size // 64)


def used_bytes(env: lmdb.Environment, dbs: dict[str, Any]) -> int:
    """Bytes in the pages that hold data (every database's tree; free pages not counted)."""
    with env.begin() as txn:
        stats = [txn.stat(db) for db in dbs.values()]
    stats.append(env.stat())
    return sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats) * stats[-1]["psize"]


def open_environment(path: str | Path, *, durability: str, map_size: int) -> tuple[lmdb.Environment, dict[str, Any]]:
    """The environment and its named databases. ``durability="fsync"`` syncs data and meta pages
    on every commit; ``"none"`` leaves flushing to the OS (safe against process crashes only).
    Raises :class:`check.DamagedStore` for a data directory LMDB must not map."""
    check_data_dir(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    synced = durability == "fsync"
    env = lmdb.open(
        str(path), map_size=map_size + headroom(map_size), max_dbs=len(DATABASES) + 1, sync=synced,
        metasync=synced, max_spare_txns=4,
    )
    try:
        refuse_newer_layout(env, str(path))  # before anything is created: a refusal writes nothing
    except LayoutError:
        env.close()
        raise
    return env, {name: env.open_db(name.encode()) for name in DATABASES}


def open_snapshot_source(path: str | Path) -> tuple[lmdb.Environment, dict[str, Any]]:
    """A data directory opened read-only beside a serving sidecar (its writer keeps committing):
    for tools that copy or verify it. Only the databases it holds are opened, since an older
    layout lacks some and a read-only environment creates none. Raises
    :class:`check.DamagedStore` where LMDB must not map it, :class:`LayoutError` for a newer layout.
    """
    check_data_dir(path)
    data = Path(path) / "data.mdb"
    if not data.is_file():
        raise LayoutError(f"{path}: no data directory there (it holds no data.mdb)")
    env = lmdb.open(str(path), readonly=True, map_size=data.stat().st_size, max_dbs=len(DATABASES) + 1)
    try:
        # Adopt the writer's map size (its meta page records it): the data may grow past the
        # file's size of now while a copy reads it, and LMDB refuses to read past its map.
        env.set_mapsize(0)
        refuse_newer_layout(env, str(path))
        dbs: dict[str, Any] = {}
        for name in DATABASES:
            try:
                dbs[name] = env.open_db(name.encode(), create=False)
            except lmdb.NotFoundError:
                continue
    except (LayoutError, lmdb.Error):
        env.close()
        raise
    return env, dbs


#: What a batch's own contents can make LMDB (or the batch's application) refuse: a key or value
#: LMDB cannot store, a database that does not exist. Every other LMDB error is the disk's or the
#: map's (full, I/O error) and may pass later.
_INPUT_ERRORS = (lmdb.BadValsizeError, KeyError, TypeError, ValueError)


class WriteFailed(msgspec.Struct, frozen=True):
    """Why a batch was not committed; ``refused``: because of its own contents."""

    message: str
    refused: bool


def commit_group(env: lmdb.Environment, dbs: dict[str, Any], batches: Sequence[WriteBatch],
                 blob_threshold: int) -> list[WriteFailed | None]:
    """Commit ``batches`` in order in one transaction; per batch, ``None`` or why it failed.

    If the group fails as a whole, its batches are tried one by one, in order. A batch refused
    for its own contents fails alone (nothing of it is written; its client is told which, so the
    gap is known). The first that fails for want of room fails every later one too: what is
    durable stays a prefix of what was submitted, with no gap nobody knows of (the invoker's
    ordering guarantees rest on it; the writer fences its clients' later batches, see writer.py).
    """
    try:
        with env.begin(write=True) as txn:
            target = store_target(txn, dbs, blob_threshold)
            for batch in batches:
                apply_batch(target, batch)
        return [None] * len(batches)
    except (lmdb.Error, *_INPUT_ERRORS):
        results: list[WriteFailed | None] = []
        full: WriteFailed | None = None
        for batch in batches:
            error = _commit_alone(env, dbs, batch, blob_threshold) if full is None else WriteFailed(
                f"an earlier write failed: {full.message}", refused=False)
            if error is not None and not error.refused:
                full = full or error
            results.append(error)
        return results


def _commit_alone(env: lmdb.Environment, dbs: dict[str, Any], batch: WriteBatch,
                  blob_threshold: int) -> WriteFailed | None:
    try:
        with env.begin(write=True) as txn:
            apply_batch(store_target(txn, dbs, blob_threshold), batch)
    except _INPUT_ERRORS as exc:
        log.warning("write refused: %s", exc)
        return WriteFailed(f"the store cannot hold this write: {exc}", refused=True)
    except lmdb.Error as exc:
        log.error("write failed: %s", exc)
        return WriteFailed(f"write failed: {exc}", refused=False)
    return None
