"""Key layouts for the named databases.

Strings are length-prefixed (u16 big-endian) so that ``(object, key)`` prefixes never run into
each other ("ab"+"c" vs "a"+"bc"), and integers are big-endian so that LMDB's byte order is their
numeric order: an inbox is ``prefix + seq + id``, in the order its invocations joined it.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _part(text: str) -> bytes:
    raw = text.encode()
    return _U16.pack(len(raw)) + raw


def object_prefix(service: str, key: str | None) -> bytes:
    """The prefix shared by everything filed under one object key (``None``: a plain service)."""
    return _part(service) + (b"\x01" + _part(key) if key is not None else b"\x00")


def state_key(service: str, key: str, name: str) -> bytes:
    return object_prefix(service, key) + name.encode()


def state_name(prefix: bytes, raw_key: bytes) -> str:
    return raw_key[len(prefix):].decode()


def journal_prefix(invocation_id: str) -> bytes:
    return invocation_id.encode() + b"/"


def journal_key(invocation_id: str, index: int) -> bytes:
    return journal_prefix(invocation_id) + _U32.pack(index)


def journal_index(raw: bytes) -> int:
    return _U32.unpack_from(raw, len(raw) - 4)[0]


def inbox_key(service: str, key: str | None, seq: int, invocation_id: str) -> bytes:
    """``seq`` orders the key's inbox; the ID after it keeps two equal seqs apart."""
    return object_prefix(service, key) + _U64.pack(seq) + invocation_id.encode()


#: An invocation ID's length: the first layout's inbox keys end with one.
_ID_LENGTH = 30


def upgrade_inbox_key(old: bytes, seq: int) -> tuple[bytes, str]:
    """A first-layout inbox key (object prefix + ID) as it is now, with ``seq``; and its ID."""
    prefix, invocation_id = old[:-_ID_LENGTH], old[-_ID_LENGTH:]
    return prefix + _U64.pack(seq) + invocation_id, invocation_id.decode()


def split_inbox_key(raw: bytes) -> tuple[str, str | None, str]:
    """Inverse of :func:`inbox_key`."""
    (n,) = _U16.unpack_from(raw, 0)
    service = raw[2:2 + n].decode()
    pos = 2 + n
    key: str | None = None
    if raw[pos] == 1:
        (m,) = _U16.unpack_from(raw, pos + 1)
        key = raw[pos + 3:pos + 3 + m].decode()
        pos += 3 + m
    else:
        pos += 1
    return service, key, raw[pos + 8:].decode()


def idempotency_key(service: str, key: str | None, handler: str, idem: str) -> bytes:
    return object_prefix(service, key) + _part(handler) + idem.encode()


def timer_key(due_ms: int, invocation_id: str, index: int) -> bytes:
    """Timers by due time: start-up reloads them in firing order with one scan."""
    return _U64.pack(due_ms) + journal_key(invocation_id, index)


def split_timer_key(raw: bytes) -> tuple[int, str, int]:
    invocation_id = raw[8:-5].decode()
    return _U64.unpack_from(raw, 0)[0], invocation_id, journal_index(raw)


def finished_key(completed_ms: int, invocation_id: str) -> bytes:
    """Finished invocations by completion time: the retention sweep is one range scan."""
    return _U64.pack(completed_ms) + invocation_id.encode()


def finished_key_time(raw: bytes) -> int:
    return _U64.unpack_from(raw, 0)[0]
