"""Identifiers: ``inv_`` + 26 Crockford base32 characters that sort by creation time.

An invocation ID is 48 bits of milliseconds, 8 bits of partition, then 72 bits that start random
and count up within one millisecond. IDs one process makes for one partition are strictly
increasing, so an inbox keyed by ID keeps arrival order; and any worker can tell from an ID alone
which partition, and so which worker, owns the invocation.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_COUNTER_BITS = 72
_PARTITION_BITS = 8
MAX_PARTITIONS = 1 << _PARTITION_BITS


#: Every 10-bit value as its two characters: an ID is 13 lookups (it is made on every request).
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]


def _base32(value: int, length: int) -> str:
    """The low ``length * 5`` bits of ``value`` in Crockford base32 (``length`` even)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(length * 5 - 10, -1, -10)])


class IdGenerator:
    """Monotonic sortable IDs (one generator per process)."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0

    def _next(self) -> tuple[int, int]:
        now = time.time_ns() // 1_000_000
        if now <= self._last_ms:
            self._counter += 1
        else:
            self._last_ms = now
            self._counter = secrets.randbits(_COUNTER_BITS - 1)  # headroom for the increments
        return self._last_ms, self._counter

    def invocation_id(self, partition: int = 0) -> str:
        ms, counter = self._next()
        return "inv_" + _base32((((ms << _PARTITION_BITS) | partition) << _COUNTER_BITS) | counter, 26)

    def deployment_id(self) -> str:
        ms, counter = self._next()
        return "dp_" + _base32((ms << (_PARTITION_BITS + _COUNTER_BITS)) | counter, 26)


def looks_like_invocation_id(text: str) -> bool:
    return len(text) == 30 and text.startswith("inv_") and all(c in _DECODE for c in text[4:])


def partition_of_id(invocation_id: str) -> int | None:
    """The partition an invocation ID was made for (None: not an invocation ID)."""
    if not looks_like_invocation_id(invocation_id):
        return None
    value = 0
    for char in invocation_id[4:]:
        value = (value << 5) | _DECODE[char]
    return (value >> _COUNTER_BITS) & (MAX_PARTITIONS - 1)
