"""Large payloads, stored once per content: the ``blobs`` and ``blob_refs`` databases.

A payload over ``blob_threshold_bytes`` (or one that looks like a reference, see
``protocol.BlobRef``) is not stored in its journal entry, state value or record: the value holds
its 48-byte reference, the bytes go zstd-compressed to ``blobs`` under their SHA-256, and
``blob_refs`` counts the stored values that refer to them. All of it happens in the writer, inside
the transaction that applies the batch (:class:`BlobTarget` wraps the transaction), so that:

- the same bytes in ten entries are hashed ten times but compressed and stored once;
- a count is exactly the number of committed values that hold the reference, whatever crashes:
  a reference and its count change in the same LMDB transaction as the value holding it, and a
  value that is overwritten or deleted (a state write, a purge, a retention sweep, a completion
  rewriting its entry) gives its references back in that transaction, the blob going with its
  last one.

Batches stay what they were (the invoker writes payloads as they are); the reads of
``lmdb_store.Store`` resolve references, so nothing outside the store sees one, except a
handler's ``Start`` (``invoker/blob_wire.py``) and the admin API, which show or send them on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import zstandard

from handler_sdk.protocol import (
    BLOB_MAGIC, PAYLOAD_FIELDS, BlobRef, Entry, entry_decoder, holds_blob_magic, map_payloads, needs_blob,
)

from . import keys
from .records import (
    BlobCount, ChildSpec, EarlyCompletion, InvocationRecord, NamedState, OutboxEntry, ParkedSend, PromiseRecord,
    ResolutionSpec,
)

#: Where stored values may hold payloads: their payload fields, per type (entries' and records').
STORED_FIELDS: dict[type, tuple[str, ...]] = PAYLOAD_FIELDS | {
    InvocationRecord: ("output",), PromiseRecord: ("value",), EarlyCompletion: ("value",), ChildSpec: ("input",),
    ResolutionSpec: ("value",), ParkedSend: ("entry",), NamedState: ("value",),
}

_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "journal": entry_decoder,
    "invocations": msgspec.msgpack.Decoder(InvocationRecord),
    "promises": msgspec.msgpack.Decoder(PromiseRecord),
    "completions": msgspec.msgpack.Decoder(EarlyCompletion),
    "outbox": msgspec.msgpack.Decoder(OutboxEntry),
}
_named_decoder = msgspec.msgpack.Decoder(NamedState)
_count_decoder = msgspec.msgpack.Decoder(BlobCount)
_encoder = msgspec.msgpack.Encoder()

#: The databases whose values may hold payloads. ``state`` values are a payload's bytes, or a
#: ``NamedState`` under a hashed name; the others are msgpack records.
PAYLOAD_DBS = frozenset(_DECODERS) | {"state"}

#: A reference as msgpack writes a 48-byte ``bin`` field: how references are found in a value
#: without decoding it (no plain payload contains the magic, no text can).
_REF_IN_MSGPACK = b"\xc4" + bytes((48,)) + BLOB_MAGIC

#: ``blob_threshold_bytes``'s default: payloads over 64 KiB are stored once by content.
DEFAULT_BLOB_THRESHOLD = 65_536

#: Fast: what is stored is written once and read on every replay.
_LEVEL = 3


def _plain_state(db: str, raw_key: bytes) -> bool:
    """A ``state`` value that is the payload itself (not a ``NamedState``)."""
    return db == "state" and not keys.state_name_hashed(raw_key)


def refs_in(raw: bytes) -> list[bytes]:
    """The SHA-256 of every blob the stored value ``raw`` refers to (with repeats): ``raw`` is a
    reference (a plain state value), or msgpack that holds some. (msgpack starting with 0xFF is
    the number -1, never a record.)"""
    ref = BlobRef.parse(raw)
    if ref is not None:
        return [ref.sha256]
    found: list[bytes] = []
    at = raw.find(_REF_IN_MSGPACK)
    while at >= 0:
        start = at + 2 + len(BLOB_MAGIC)
        found.append(raw[start:start + 32])
        at = raw.find(_REF_IN_MSGPACK, start)
    return found


def map_stored(db: str, raw_key: bytes, raw: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """The stored value ``raw`` with ``change`` applied to each payload it holds."""
    if _plain_state(db, raw_key):
        return change(raw)
    decoded = (_named_decoder if db == "state" else _DECODERS[db]).decode(raw)
    mapped = map_payloads(decoded, STORED_FIELDS, change)
    return raw if mapped is decoded else _encoder.encode(mapped)


def _inliner(fetch: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def inline(payload: bytes) -> bytes:
        ref = BlobRef.parse(payload)
        return payload if ref is None else fetch(ref.sha256)
    return inline


def resolve_stored(db: str, raw_key: bytes, raw: bytes, fetch: Callable[[bytes], bytes]) -> bytes:
    """The stored value ``raw`` with every reference replaced by its bytes (``fetch``: SHA-256 ->
    bytes): what the invoker wrote. Values that hold none are returned as they are, undecoded."""
    if not holds_blob_magic(raw):
        return raw
    return map_stored(db, raw_key, raw, _inliner(fetch))


def resolve_entry(raw: bytes, fetch: Callable[[bytes], bytes]) -> Entry:
    """A stored journal entry, decoded, with its references replaced by their bytes (no copy of
    them, unlike ``resolve_stored``: replays read long journals of large entries)."""
    entry: Entry = entry_decoder.decode(raw)
    return map_payloads(entry, PAYLOAD_FIELDS, _inliner(fetch)) if holds_blob_magic(raw) else entry


class MissingBlob(Exception):
    """A reference whose blob is not stored (never, while counts are exact)."""


def decompress(sha256: bytes, stored: bytes | None) -> bytes:
    """A blob's bytes from what ``blobs`` holds for it (``None``: nothing)."""
    if stored is None:
        raise MissingBlob(f"blob {sha256.hex()} is not stored")
    return zstandard.ZstdDecompressor().decompress(stored)


def preview(stored: bytes, size: int) -> bytes:
    """The first ``size`` bytes of a stored blob, decompressing no more than that."""
    with zstandard.ZstdDecompressor().stream_reader(stored) as reader:
        return reader.read(size)


class Readable(Protocol):
    """What :class:`BlobTarget` needs of the transaction it wraps: ``batch.Target`` and reads."""

    def put(self, db: str, key: bytes, value: bytes) -> None: ...

    def delete(self, db: str, key: bytes) -> None: ...

    def keys_with_prefix(self, db: str, prefix: bytes) -> list[bytes]: ...

    def get(self, db: str, key: bytes) -> bytes | None: ...

    def replace(self, db: str, key: bytes, value: bytes) -> bytes | None: ...

    def pop(self, db: str, key: bytes) -> bytes | None: ...


class BlobTarget:
    """A ``batch.Target`` that stores large payloads as blobs and keeps their counts exact."""

    __slots__ = ("_inner", "_threshold", "_compressor", "_refs_stored")

    def __init__(self, inner: Readable, threshold: int, *, refs_stored: bool = True) -> None:
        self._inner = inner
        self._threshold = threshold
        #: Whether any stored value may refer to a blob (``blob_refs`` is not empty). While none
        #: does, no value written over or deleted can give a reference back, so values are put
        #: and deleted without reading what they replace: the common case, and one lookup less.
        self._refs_stored = refs_stored
        #: Made when a first blob is stored: building one costs more than most batches.
        self._compressor: zstandard.ZstdCompressor | None = None

    def put(self, db: str, key: bytes, value: bytes) -> None:
        if db not in PAYLOAD_DBS:
            self._inner.put(db, key, value)
            return
        if len(value) > self._threshold or holds_blob_magic(value):
            value = map_stored(db, key, value, self._store_payload)
        if not self._refs_stored:
            self._inner.put(db, key, value)
            return
        # After the new value took its references: a count passes 0 only when its blob is gone.
        self._release(self._inner.replace(db, key, value))

    def delete(self, db: str, key: bytes) -> None:
        if db in PAYLOAD_DBS and self._refs_stored:
            self._release(self._inner.pop(db, key))
        else:
            self._inner.delete(db, key)

    def keys_with_prefix(self, db: str, prefix: bytes) -> list[bytes]:
        return self._inner.keys_with_prefix(db, prefix)

    def _store_payload(self, payload: bytes) -> bytes:
        if not needs_blob(payload, self._threshold):
            return payload
        ref = BlobRef.of(payload)
        raw = self._inner.get("blob_refs", ref.sha256)
        if raw is None:
            if self._compressor is None:
                self._compressor = zstandard.ZstdCompressor(level=_LEVEL)
            self._inner.put("blobs", ref.sha256, self._compressor.compress(payload))
            count = BlobCount(count=1, size=ref.size)
            self._refs_stored = True
        else:
            count = _count_decoder.decode(raw)
            count.count += 1
        self._inner.put("blob_refs", ref.sha256, _encoder.encode(count))
        return ref.encode()

    def _release(self, old: bytes | None) -> None:
        """Give back the references of ``old``, a stored value just replaced or deleted."""
        if old is None or not holds_blob_magic(old):
            return
        for sha in refs_in(old):
            raw = self._inner.get("blob_refs", sha)
            if raw is None:  # not while counts are exact
                continue
            count = _count_decoder.decode(raw)
            count.count -= 1
            if count.count > 0:
                self._inner.put("blob_refs", sha, _encoder.encode(count))
            else:
                self._inner.delete("blob_refs", sha)
                self._inner.delete("blobs", sha)
