"""Applying batches to an LMDB write transaction."""

from __future__ import annotations

from typing import Any

import lmdb

from .batch import Target
from .blobs import BlobTarget


class TxnTarget:
    """Adapts an LMDB write transaction to :class:`batch.Target`."""

    __slots__ = ("txn", "dbs")

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
        self.txn = txn
        self.dbs = dbs

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[db])

    def delete(self, db: str, key: bytes) -> None:
        self.txn.delete(key, db=self.dbs[db])

    def get(self, db: str, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.dbs[db])

    def replace(self, db: str, key: bytes, value: bytes) -> bytes | None:
        """Put ``value``, and return what it replaced: one lookup for both."""
        old: bytes | None = self.txn.replace(key, value, db=self.dbs[db])
        return old

    def pop(self, db: str, key: bytes) -> bytes | None:
        """Delete ``key``, and return what it held."""
        old: bytes | None = self.txn.pop(key, db=self.dbs[db])
        return old

    def keys_with_prefix(self, db: str, prefix: bytes) -> list[bytes]:
        cursor = self.txn.cursor(db=self.dbs[db])
        found: list[bytes] = []
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                found.append(key)
        return found


def store_target(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], blob_threshold: int) -> Target:
    """What every batch is applied to: the transaction, with payloads over ``blob_threshold``
    bytes stored as blobs (``blobs.py``)."""
    refs = dbs.get("blob_refs")  # absent only while an older layout is migrated: no blobs then
    refs_stored = False
    if refs is not None:
        with txn.cursor(db=refs) as cursor:
            refs_stored = cursor.first()
    return BlobTarget(TxnTarget(txn, dbs), blob_threshold, refs_stored=refs_stored)
