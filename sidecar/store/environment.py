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

from .batch import WriteBatch, apply_batch
from .layout import LayoutError, refuse_newer_layout

log = logging.getLogger(__name__)

DATABASES = (
    "invocations", "journal", "state", "inbox", "idempotency", "finished", "deployments", "meta", "timers",
    "completions", "promises", "outbox",
)


def open_environment(path: str | Path, *, durability: str, map_size: int) -> tuple[lmdb.Environment, dict[str, Any]]:
    """The environment and its named databases. ``durability="fsync"`` syncs data and meta pages
    on every commit; ``"none"`` leaves flushing to the OS (safe against process crashes only)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    synced = durability == "fsync"
    env = lmdb.open(
        str(path), map_size=map_size, max_dbs=len(DATABASES) + 1, sync=synced, metasync=synced, max_spare_txns=4,
    )
    try:
        refuse_newer_layout(env, str(path))  # before anything is created: a refusal writes nothing
    except LayoutError:
        env.close()
        raise
    return env, {name: env.open_db(name.encode()) for name in DATABASES}


class TxnTarget:
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
        cursor = self.txn.cursor(db=self.dbs[db])
        found: list[bytes] = []
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                found.append(key)
        return found


def commit_group(env: lmdb.Environment, dbs: dict[str, Any], batches: Sequence[WriteBatch]) -> list[str | None]:
    """Commit ``batches`` in order in one transaction; per batch, ``None`` or why it failed.

    If the group fails as a whole (map full, disk full), its batches are tried one by one, in
    order, up to the first that fails: that one and every later one fail, so what is durable is
    always a prefix of what was submitted (the invoker's ordering guarantees rest on it).
    """
    try:
        with env.begin(write=True) as txn:
            target = TxnTarget(txn, dbs)
            for batch in batches:
                apply_batch(target, batch)
        return [None] * len(batches)
    except lmdb.Error:
        results: list[str | None] = []
        for batch in batches:
            error = _commit_alone(env, dbs, batch) if not any(results) else "an earlier write failed"
            results.append(error)
        return results


def _commit_alone(env: lmdb.Environment, dbs: dict[str, Any], batch: WriteBatch) -> str | None:
    try:
        with env.begin(write=True) as txn:
            apply_batch(TxnTarget(txn, dbs), batch)
    except lmdb.Error as exc:
        log.error("write failed: %s", exc)
        return f"write failed: {exc}"
    return None
