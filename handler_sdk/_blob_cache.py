"""The handler process's content-addressed cache of large payloads.

The sidecar sends a payload over its ``blob_threshold`` as a reference (``protocol.BlobRef``) and
the bytes only where it believes this process lacks them (``Start.payloads.blobs``): a replay of a long
journal then costs a few bytes per large entry instead of the entries again. The cache holds
what the sidecar sent and what this process's own commands carried (the sidecar counts those as
held), least recently used first out past ``max_bytes``. Whatever it lacks (it was evicted, the
process restarted) it asks for with ``FetchBlobs``: the cache is an optimisation, never a source
of truth.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from .protocol import PAYLOAD_FIELDS, BlobData, BlobRef, Entry, Start, blob_payloads, map_payloads

#: ``app(blob_cache_bytes=)``'s default.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class BlobCache:
    """Payloads by SHA-256, bounded in bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("blob_cache_bytes must be zero (no cache) or more")
        self.max_bytes = max_bytes
        self._held: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def add(self, sha256: bytes, data: bytes) -> None:
        if sha256 in self._held or len(data) > self.max_bytes:
            return
        self._held[sha256] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._held.popitem(last=False)
            self._bytes -= len(evicted)

    def add_all(self, blobs: list[BlobData]) -> None:
        for blob in blobs:
            self.add(blob.sha256, blob.data)

    def remember(self, entry: Entry, threshold: int) -> None:
        """``entry`` goes to the sidecar: keep its large payloads, which the sidecar now knows we hold."""
        if threshold:
            for payload in blob_payloads(entry, threshold):
                self.add(BlobRef.of(payload).sha256, payload)

    def resolve(self, start: Start) -> Start | list[bytes]:
        """``start`` with every reference replaced by its bytes, or the SHA-256s this cache lacks.
        Its blobs are taken in first, and looked up even where the cache is too small to keep them."""
        terms = start.payloads
        if not terms.refs:
            return start
        given = {blob.sha256: blob.data for blob in terms.blobs}
        self.add_all(terms.blobs)
        missing: list[bytes] = []

        def inline(payload: bytes) -> bytes:
            ref = BlobRef.parse(payload)
            if ref is None:
                return payload
            data = given.get(ref.sha256)
            if data is None:
                data = self._held.get(ref.sha256)
                if data is not None:
                    self._held.move_to_end(ref.sha256)
            if data is None:
                if ref.sha256 not in missing:
                    missing.append(ref.sha256)
                return payload
            return data

        journal = [map_payloads(entry, PAYLOAD_FIELDS, inline) for entry in start.journal]
        state = None if start.state is None else {name: inline(value) for name, value in start.state.items()}
        resolved = msgspec.structs.replace(start, input=inline(start.input), journal=journal, state=state,
                                           payloads=msgspec.structs.replace(terms, blobs=[]))
        return missing or resolved
