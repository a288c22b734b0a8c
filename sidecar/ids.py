"""Identifiers: ``inv_`` + 26 Crockford base32 characters that sort by creation time.

An invocation ID is 48 bits of milliseconds, 8 bits of partition, then 72 random bits. IDs sort
by the millisecond they were made in; within one millisecond their order is random, so that no ID
can be guessed from another one (an ID is what attach, output and event streams are asked with).
Arrival order within a key's inbox is kept by a sequence of its own (``clock.InboxClock``). Any
worker can tell from an ID alone which partition, and so which worker, owns the invocation.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_RANDOM_BITS = 72
_PARTITION_BITS = 8
MAX_PARTITIONS = 1 << _PARTITION_BITS


#: Every 10-bit value as its two characters: an ID is 13 lookups (it is made on every request).
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]


def _base32(value: int, length: int) -> str:
    """The low ``length * 5`` bits of ``value`` in Crockford base32 (``length`` even)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(length * 5 - 10, -1, -10)])


class IdGenerator:
    """Sortable, unguessable IDs."""

    def invocation_id(self, partition: int = 0) -> str:
        value = (((time.time_ns() // 1_000_000) << _PARTITION_BITS) | partition) << _RANDOM_BITS
        return "inv_" + _base32(value | secrets.randbits(_RANDOM_BITS), 26)

    def deployment_id(self) -> str:
        value = (time.time_ns() // 1_000_000) << (_PARTITION_BITS + _RANDOM_BITS)
        return "dp_" + _base32(value | secrets.randbits(_RANDOM_BITS), 26)


def looks_like_invocation_id(text: str) -> bool:
    return len(text) == 30 and text.startswith("inv_") and all(c in _DECODE for c in text[4:])


def partition_of_id(invocation_id: str) -> int | None:
    """The partition an invocation ID was made for (None: not an invocation ID)."""
    if not looks_like_invocation_id(invocation_id):
        return None
    value = 0
    for char in invocation_id[4:]:
        value = (value << 5) | _DECODE[char]
    return (value >> _RANDOM_BITS) & (MAX_PARTITIONS - 1)
