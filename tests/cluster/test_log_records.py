"""Log records: every byte counts toward the checksum, and no payload read from the log, however
mangled, raises anything but the two refusals a follower handles.

What ``decode_record`` raises, decided: :class:`DamagedRecord` for bytes whose CRC-32 does not
match (torn or flipped on the way), ``msgspec.DecodeError`` (``ValidationError`` is one) for a
body that passes the checksum and still is no ``LogRecord`` (written by another version or a bug).
Neither record is ever applied."""

from __future__ import annotations

import zlib

import msgspec
import pytest
from hypothesis import given, strategies as st

from sidecar.cluster.changelog import DamagedRecord, LogRecord, decode_record, encode_record
from sidecar.store.batch import WriteBatch


def _record() -> LogRecord:
    batch = WriteBatch()
    batch.put("journal", b"inv_1/0", b"step output")
    batch.delete_prefix("state", b"Counter/k/")
    return LogRecord(partition=3, node="n1", batches=[batch, WriteBatch()])


def test_a_record_round_trips_and_any_flipped_byte_is_refused() -> None:
    payload = encode_record(_record())
    assert decode_record(payload) == _record()
    for i in range(len(payload)):
        flipped = bytearray(payload)
        flipped[i] ^= 0x01
        with pytest.raises(DamagedRecord):
            decode_record(bytes(flipped))
    with pytest.raises(DamagedRecord):
        decode_record(payload[:-1])
    with pytest.raises(DamagedRecord):
        decode_record(b"")


@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_refused_as_damaged(payload: bytes) -> None:
    try:
        decode_record(payload)
    except (DamagedRecord, msgspec.DecodeError):
        pass


@given(st.binary(max_size=512))
def test_a_body_that_passes_the_checksum_is_decoded_or_refused_by_msgspec(body: bytes) -> None:
    try:
        record = decode_record(zlib.crc32(body).to_bytes(4, "big") + body)
    except msgspec.DecodeError:
        return
    assert isinstance(record, LogRecord)
