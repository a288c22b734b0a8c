"""The partition model: how keys map to partitions and partitions to worker processes.

The number of partitions is fixed when a data directory is created and stored in it; a key's
partition never changes. Workers own partitions (here ``partition % workers == index``), so
ownership can move between processes, or later between machines, without rehashing any key.
Every key belongs to one partition and every partition to one process at a time, so per-key
ordering and exactly-once hold however many workers there are. See docs/partitions.md.
"""

from __future__ import annotations

import zlib

import msgspec

from ..ids import partition_of_id
from ..store import keys

DEFAULT_PARTITIONS = 64


class PartitionMap(msgspec.Struct, frozen=True):
    partitions: int
    workers: int
    index: int

    @classmethod
    def single(cls, partitions: int = DEFAULT_PARTITIONS) -> PartitionMap:
        return cls(partitions=partitions, workers=1, index=0)

    def of_key(self, service: str, key: str) -> int:
        """The partition of an object key: stable across processes, restarts and versions."""
        return zlib.crc32(keys.object_prefix(service, key)) % self.partitions

    def of_target(self, service: str, key: str | None, handler: str, idempotency_key: str | None) -> int | None:
        """Where a new invocation must be created: its key's partition; for a keyless call with
        an idempotency key, that key's (so repeats meet); otherwise anywhere (``None``)."""
        if key is not None:
            return self.of_key(service, key)
        if idempotency_key is not None:
            return zlib.crc32(keys.idempotency_key(service, None, handler, idempotency_key)) % self.partitions
        return None

    def of_schedule(self, name: str) -> int:
        """The partition of a schedule: the worker that owns it fires it, and no other does."""
        return zlib.crc32(b"schedule/" + keys.schedule_key(name)) % self.partitions

    def owner(self, partition: int) -> int:
        return partition % self.workers

    def owns(self, partition: int) -> bool:
        return partition % self.workers == self.index

    def shares_batches(self, partition: int, other: int) -> bool:
        """Whether one write batch may change both partitions (this process owns ``partition``):
        here, whenever it owns ``other`` too, since all of its batches reach one writer."""
        return self.owns(other)

    def owns_invocation(self, invocation_id: str) -> bool:
        partition = partition_of_id(invocation_id)
        return partition is not None and self.owns(partition)

    def local_partition(self, counter: int) -> int:
        """A partition this process owns, for invocations that may live anywhere."""
        owned = (self.partitions - 1 - self.index) // self.workers + 1
        return self.index + (counter % owned) * self.workers

