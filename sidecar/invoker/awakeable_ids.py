"""Awakeable IDs: which invocation and entry one names, and whether this sidecar minted it.

An ID is ``awk_<invocation id>_<index>_<tag>`` (``handler_sdk.protocol.awakeable_id``). Each
attempt's ``Start`` carries the invocation's key, HMAC-SHA256(data directory secret, invocation
ID); the handler makes the tag from it. So any worker checks an ID with two HMACs and no lookup,
a handler can mint IDs for its own invocation only, and the directory's secret stays here.
"""

from __future__ import annotations

import hashlib
import hmac

from handler_sdk.protocol import awakeable_id

_INVOCATION_ID_LENGTH = 30  # "inv_" + 26
_MAX_INDEX_DIGITS = 10  # journal indexes are u32 (keys.journal_key)


def invocation_key(secret: bytes, invocation_id: str) -> bytes:
    """What ``Start.awakeable_key`` carries for ``invocation_id``."""
    return hmac.new(secret, invocation_id.encode(), hashlib.sha256).digest()


def parse_awakeable_id(text: str) -> tuple[str, int]:
    """``awk_<invocation id>_<index>_<tag>`` -> (invocation id, index); ValueError if it is not
    one, or if the index is past any journal's (2**32)."""
    invocation_id = text[4:4 + _INVOCATION_ID_LENGTH]
    index, sep, tag = text[5 + _INVOCATION_ID_LENGTH:].partition("_")
    if not text.isascii() or not text.startswith("awk_") or not invocation_id.startswith("inv_") \
            or text[4 + _INVOCATION_ID_LENGTH:5 + _INVOCATION_ID_LENGTH] != "_" or not index.isdigit() \
            or len(index) > _MAX_INDEX_DIGITS or int(index) >= 2**32 or not sep or not tag:
        raise ValueError(text)
    return invocation_id, int(index)


def minted(secret: bytes, text: str) -> bool:
    """Whether ``text`` is an awakeable ID made with a key this directory's secret gave out."""
    try:
        invocation_id, index = parse_awakeable_id(text)
    except ValueError:
        return False
    expected = awakeable_id(invocation_id, index, invocation_key(secret, invocation_id))
    return hmac.compare_digest(expected.encode(), text.encode())
