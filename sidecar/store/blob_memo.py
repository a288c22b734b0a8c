"""Blobs a worker read or handled lately, decompressed, by SHA-256: replays read them again and again.

A resume reads the invocation's journal back from the store, and its ``Start`` refers to each
large payload by SHA-256; without this, every resume would decompress every blob it holds and
hash it again (most of a resume's time, for a journal of large steps). The memo keeps the bytes
(bounded, least recently used first out) and knows the SHA-256 of the very bytes objects it
holds, so a payload it handed out is never hashed twice.
"""

from __future__ import annotations

from collections import OrderedDict

from handler_sdk.protocol import BlobRef

#: What one worker keeps.
MEMO_BYTES = 128 * 1024 * 1024


class BlobMemo:
    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        self._max_bytes = max_bytes
        self._by_sha: OrderedDict[bytes, bytes] = OrderedDict()
        #: ``id()`` of each bytes object held -> its SHA-256 (dropped with the object, so no id is stale).
        self._sha_of: dict[int, bytes] = {}
        self._bytes = 0

    def get(self, sha256: bytes) -> bytes | None:
        data = self._by_sha.get(sha256)
        if data is not None:
            self._by_sha.move_to_end(sha256)
        return data

    def put(self, sha256: bytes, data: bytes) -> None:
        if sha256 in self._by_sha or len(data) > self._max_bytes:
            return
        self._by_sha[sha256] = data
        self._sha_of[id(data)] = sha256
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            _, evicted = self._by_sha.popitem(last=False)
            del self._sha_of[id(evicted)]
            self._bytes -= len(evicted)

    def ref(self, payload: bytes) -> BlobRef:
        """``payload``'s reference: hashed only if it is not bytes this memo holds."""
        sha = self._sha_of.get(id(payload))
        if sha is not None and self._by_sha.get(sha) is payload:
            self._by_sha.move_to_end(sha)
            return BlobRef(sha, len(payload))
        ref = BlobRef.of(payload)
        self.put(ref.sha256, payload)
        return ref
