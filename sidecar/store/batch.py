"""Write batches: the unit of durability.

Every change the sidecar makes is a :class:`WriteBatch` of plain operations on named databases.
The writer applies all batches that queued up meanwhile in one LMDB transaction (group commit).
:func:`apply_batch` is a pure function of the transaction's contents and the batch, so a batch is
also what a replicated changelog would carry, and it is property-tested against a dict model.
"""

from __future__ import annotations

from typing import Protocol, Union, final

import msgspec


@final
class Put(msgspec.Struct, tag=True, array_like=True, frozen=True):
    db: str
    key: bytes
    value: bytes


@final
class Delete(msgspec.Struct, tag=True, array_like=True, frozen=True):
    db: str
    key: bytes


@final
class DeletePrefix(msgspec.Struct, tag=True, array_like=True, frozen=True):
    """Delete every key of ``db`` that starts with ``prefix`` (clear-all state, purge a journal)."""

    db: str
    prefix: bytes


Op = Union[Put, Delete, DeletePrefix]


class WriteBatch(msgspec.Struct, array_like=True):
    ops: list[Op] = []
    #: The invocation this batch is written for, where its keys do not say (cluster mode reads a
    #: batch's partition from its keys: ``cluster/batch_partition.py``); usually empty.
    home: str = ""

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.ops.append(Put(db, key, value))

    def delete(self, db: str, key: bytes) -> None:
        self.ops.append(Delete(db, key))

    def delete_prefix(self, db: str, prefix: bytes) -> None:
        self.ops.append(DeletePrefix(db, prefix))


class Target(Protocol):
    """What :func:`apply_batch` writes to: an LMDB write transaction or an in-memory model."""

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete(self, db: str, key: bytes) -> None: ...

    def keys_with_prefix(self, db: str, prefix: bytes) -> list[bytes]: ...


def apply_batch(target: Target, batch: WriteBatch) -> None:
    """Apply ``batch`` in order. Later operations see earlier ones (a put then a delete-prefix)."""
    for op in batch.ops:
        if type(op) is Put:
            target.put(op.db, op.key, op.value)
        elif type(op) is Delete:
            target.delete(op.db, op.key)
        else:
            for key in target.keys_with_prefix(op.db, op.prefix):
                target.delete(op.db, key)
