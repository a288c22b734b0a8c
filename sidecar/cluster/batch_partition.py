"""Which partition a write batch belongs to, read from the keys it writes.

In cluster mode each batch goes to its partition's subject of the log, so it must belong to
exactly one partition; the invoker builds them so (a child in another partition goes through
the outbox, a retention sweep writes one batch per partition). Reading the partition from the
keys costs single-node mode nothing: only the cluster's commit path calls this. The layouts are
``store/keys.py``'s: most keys hold an invocation ID at a fixed place, and an ID names its
partition (``ids.partition_of_id``); state and promises start with their object's prefix; a
schedule's partition is its name's. The ``idempotency`` database is not read (a keyed and a keyless
key cannot always be told apart once hashed): its writes always come with their invocation's.
An outbox entry is filed under its target, not its sender, so a batch that only removes one says
its sender in ``WriteBatch.home``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from ..ids import partition_of_id
from ..store import keys
from ..store.batch import DeletePrefix, WriteBatch

_ID = 30


def _first(raw: bytes) -> str:
    return raw[:_ID].decode()


def _after_time(raw: bytes) -> str:
    return raw[8:8 + _ID].decode()


def _last(raw: bytes) -> str:
    return raw[-_ID:].decode()


def _before_index(raw: bytes) -> str:
    return raw[-_ID - 4:-4].decode()


#: Where each database's keys hold their invocation's ID.
_ID_AT: dict[str, Callable[[bytes], str]] = {
    "invocations": _first, "journal": _first, "completions": _first, "timers": _after_time,
    "inbox": _last, "by_status": _last, "by_target": _last, "finished": _last, "costs": _before_index,
    "webhook_outbox": _last,
}
#: The same for a ``DeletePrefix``'s prefix (a journal's, a cost list's).
_PREFIX_ID_AT: dict[str, Callable[[bytes], str]] = {"journal": _first, "completions": _first, "costs": _last}
_BY_OBJECT = frozenset({"state", "promises"})
#: Nobody's: content-addressed payloads (counted where they are applied), the node's own records.
_UNPARTITIONED = frozenset({"blobs", "blob_refs", "deployments", "meta", "idempotency", "outbox"})


class MixedBatch(ValueError):
    """A batch that writes to more than one partition (cannot go to one partition's log)."""


def batch_partition(batch: WriteBatch, partitions: int) -> int | None:
    """The one partition ``batch`` writes to; ``None``: it writes to none (deployments, the
    node's own records). Raises :class:`MixedBatch` for a batch that spans partitions."""
    found: set[int] = set()
    if batch.home:
        found.add(_of_id(batch.home))
    for op in batch.ops:
        db = op.db
        if type(op) is DeletePrefix:
            raw, at = op.prefix, _PREFIX_ID_AT.get(db)
        else:
            raw, at = op.key, _ID_AT.get(db)
        if at is not None:
            found.add(_of_id(at(raw)))
        elif db in _BY_OBJECT:
            found.add(zlib.crc32(raw[:keys.prefix_length(raw)]) % partitions)
        elif db == "schedules":
            found.add(zlib.crc32(b"schedule/" + raw) % partitions)
        elif db not in _UNPARTITIONED:
            raise MixedBatch(f"no partition is known for database {db!r}")
        if len(found) > 1:
            raise MixedBatch(f"one batch writes to partitions {sorted(found)}")
    return found.pop() if found else None


def _of_id(invocation_id: str) -> int:
    partition = partition_of_id(invocation_id)
    if partition is None:
        raise MixedBatch(f"{invocation_id!r} is not an invocation ID")
    return partition
