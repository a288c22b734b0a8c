"""What the sidecar believes a handler process holds in its blob cache, per link.

A belief, not a record: it is made of the blobs sent on the link and the large payloads the
handler sent on it (the SDK keeps both), bounded below the SDK's default cache, and forgotten
with the link (a new link may be a restarted process). Where it is wrong the handler asks for
what it lacks (``FetchBlobs``), so it costs a round trip, never a wrong replay.
"""

from __future__ import annotations

from collections import OrderedDict

#: Below the SDK's default cache (256 MiB): what it evicts first is forgotten here first.
BELIEF_BYTES = 192 * 1024 * 1024


class HeldBlobs:
    """SHA-256s a handler process is believed to hold, least recently used first out."""

    def __init__(self, max_bytes: int = BELIEF_BYTES) -> None:
        self._max_bytes = max_bytes
        self._held: OrderedDict[bytes, int] = OrderedDict()
        self._bytes = 0

    def __contains__(self, sha256: bytes) -> bool:
        if sha256 not in self._held:
            return False
        self._held.move_to_end(sha256)
        return True

    def add(self, sha256: bytes, size: int) -> None:
        if sha256 in self._held:
            self._held.move_to_end(sha256)
            return
        self._held[sha256] = size
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, evicted = self._held.popitem(last=False)
            self._bytes -= evicted
