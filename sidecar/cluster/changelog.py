"""The narrow interface between the sidecar and the replicated log it runs on.

Cluster mode needs five things of a log, and nothing else: append a partition's record only if
the partition's last record is the one the appender saw (the fence), recognise a retried append
(the message ID), read everything from a position on, tell where a partition's and the whole log's
end are, and keep snapshots. NATS JetStream provides them (``nats_log.py``); another engine (Kafka
with a transactional producer per partition, a Postgres table) could sit behind the same methods.
Single-node mode has no log at all: its commits go to LMDB alone.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from ..store.batch import WriteBatch


class Fenced(RuntimeError):
    """The partition's last record is not the one the appender expected: another node appended
    to it since (a new owner's claim). The appender must stop serving the partition at once."""


class LogUnavailable(RuntimeError):
    """The log did not take the append within the bounded retries (no quorum, an election that
    outlasted them): nothing is known to be stored, and nothing may be acknowledged."""


class RecordTooLarge(ValueError):
    """A record larger than the log takes in one append: the group commit must be split (nothing
    was stored)."""


class DamagedRecord(ValueError):
    """A record whose checksum does not match its body: never applied."""


class LogRecord(msgspec.Struct, array_like=True, frozen=True):
    """One append to a partition's subject: the batches of one group commit, in submit order,
    by ``node``. A record without batches is a **claim**: the first append of a new owner, which
    moves the partition's last sequence past anything its previous owner could still expect."""

    partition: int
    node: str
    batches: list[WriteBatch]


class Entry(msgspec.Struct, array_like=True, frozen=True):
    """A record as read back: its sequence in the whole log, and its partition."""

    sequence: int
    partition: int
    payload: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LogRecord)


def encode_record(record: LogRecord) -> bytes:
    """The record's bytes, led by a CRC-32 of the rest (checked on every read)."""
    body = _encoder.encode(record)
    return zlib.crc32(body).to_bytes(4, "big") + body


def decode_record(payload: bytes) -> LogRecord:
    if len(payload) < 4 or zlib.crc32(payload[4:]) != int.from_bytes(payload[:4], "big"):
        raise DamagedRecord("a log record's checksum does not match its contents")
    return _decoder.decode(payload[4:])


class Changelog(Protocol):
    async def append(self, partition: int, payload: bytes, *, expected: int | None, message_id: str) -> int:
        """Store ``payload`` as partition ``partition``'s next record if its last record's
        sequence is ``expected`` (0: it has none; None: whatever it is); return the new record's
        sequence.
        Raises :class:`Fenced` when ``expected`` is not the last sequence, :class:`LogUnavailable`
        when the log could not be reached within the bounded retries. A retry with the same
        ``message_id`` (within the log's deduplication window) returns the first append's sequence."""
        ...

    async def last_sequence(self, partition: int) -> int:
        """The sequence of partition ``partition``'s last record (0: none)."""
        ...

    async def tail(self) -> int:
        """The sequence of the whole log's last record (0: empty)."""
        ...

    async def first(self) -> int:
        """The sequence from which on every record is kept (1 until a trim): a store whose marks
        are below it must start from a snapshot."""
        ...

    def read_from(self, start: int) -> AsyncIterator[Entry]:
        """Every record from sequence ``start`` on, in log order, then each new one as it is
        appended (never ends by itself)."""
        ...

    async def put_snapshot(self, name: str, data: bytes, sequence: int) -> None:
        """Keep ``data`` (a compacted store) as the snapshot ``name``, taken at ``sequence``."""
        ...

    async def get_snapshot(self, name: str) -> tuple[bytes, int] | None:
        """The snapshot ``name`` and its sequence, if there is one."""
        ...

    async def trim(self, below: int) -> None:
        """Drop every record with a sequence below ``below`` (all are in a snapshot), except each
        partition's last record, which the fence compares against."""
        ...
