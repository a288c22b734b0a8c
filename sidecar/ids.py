"""Identifiers: ``inv_`` + 26 Crockford base32 characters that sort by creation time.

48 bits of milliseconds then 80 bits that start random and count up within one millisecond, so
IDs made by one process are strictly increasing: an inbox keyed by ID keeps arrival order.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class IdGenerator:
    """Monotonic sortable IDs (one generator per process)."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._last_random = 0

    def _next_value(self) -> int:
        now = time.time_ns() // 1_000_000
        if now <= self._last_ms:
            now = self._last_ms
            self._last_random += 1
        else:
            self._last_ms = now
            self._last_random = secrets.randbits(_RANDOM_BITS - 1)  # headroom for the increments
        return (now << _RANDOM_BITS) | self._last_random

    def invocation_id(self) -> str:
        return "inv_" + _base32(self._next_value(), 26)

    def deployment_id(self) -> str:
        return "dp_" + _base32(self._next_value(), 26)


def unguessable_token() -> str:
    """An opaque 128-bit token (awakeable IDs, seeds)."""
    return _base32(secrets.randbits(130), 26)


def looks_like_invocation_id(text: str) -> bool:
    return len(text) == 30 and text.startswith("inv_") and all(c in _ALPHABET for c in text[4:])
