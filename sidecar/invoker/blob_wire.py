"""Large payloads on the way to a handler: references, and the blobs it is believed to lack.

A ``Start`` carries every payload over the store's ``blob_threshold`` as a reference, and in
``Start.payloads.blobs`` the bytes of those its link's ``HeldBlobs`` does not list (at most
``START_BLOB_BYTES`` of them: the handler asks for the rest). What the attempt referred to stays
with it (``OutgoingBlobs``), so that a ``FetchBlobs`` is answered from memory. A request-response
link holds nothing between requests: its ``Start`` carries every blob.
"""

from __future__ import annotations

from collections.abc import Callable

from handler_sdk.protocol import PAYLOAD_FIELDS, BlobData, BlobRef, Blobs, Entry, Input, blob_payloads, map_payloads, needs_blob

from ..transport.held_blobs import HeldBlobs

#: A payload's reference (``store.blob_memo.ref``: hashed once per bytes object it holds).
RefOf = Callable[[bytes], BlobRef]

#: What one ``Start`` (or one ``Blobs`` answer) carries of blobs at most, well under the links'
#: frame limit; a payload larger than that goes alone.
START_BLOB_BYTES = 32 * 1024 * 1024


class OutgoingBlobs:
    """One attempt's payloads as its ``Start`` sends them, and the bytes behind its references."""

    def __init__(self, threshold: int, held: HeldBlobs | None, ref_of: RefOf) -> None:
        self.threshold = threshold
        self._held = held
        self._ref_of = ref_of
        #: The bytes of every blob the attempt's ``Start`` referred to, by SHA-256.
        self.sources: dict[bytes, bytes] = {}
        #: Those sent in the ``Start`` itself.
        self.sent: list[BlobData] = []
        self._sent_bytes = 0
        self._refs: dict[int, bytes] = {}  # id(payload) -> its reference: the input is in the journal too

    def payload(self, payload: bytes) -> bytes:
        """``payload`` as the ``Start`` sends it (as it is, where ``threshold`` is 0)."""
        if not self.threshold or not needs_blob(payload, self.threshold):
            return payload
        known = self._refs.get(id(payload))
        if known is not None:
            return known
        ref = self._ref_of(payload)
        encoded = self._refs[id(payload)] = ref.encode()
        if ref.sha256 in self.sources:
            return encoded
        self.sources[ref.sha256] = payload
        held = self._held
        if held is None or (ref.sha256 not in held and (not self.sent or self._sent_bytes + ref.size <= START_BLOB_BYTES)):
            self.sent.append(BlobData(ref.sha256, payload))
            self._sent_bytes += ref.size
            if held is not None:
                held.add(ref.sha256, ref.size)
        return encoded

    def start_payloads(self, journal: list[Entry], state: dict[str, bytes] | None,
                       total: int) -> tuple[bytes, list[Entry], dict[str, bytes] | None]:
        """The input, journal and state as a ``Start`` sends them. ``total`` is what all their
        payloads take: when it is within the threshold no payload is over it, nothing is looked at,
        and the ``Start`` says it has no references (so a small payload that looks like one is
        taken as it is)."""
        first = journal[0]
        input_value = first.value if type(first) is Input else b""
        if not self.threshold or total <= self.threshold:
            return input_value, journal, state
        return (self.payload(input_value), [self.entry(entry) for entry in journal],
                None if state is None else {name: self.payload(value) for name, value in state.items()})

    def entry(self, entry: Entry) -> Entry:
        if not self.threshold or not blob_payloads(entry, self.threshold):
            return entry  # most entries: nothing to replace
        return map_payloads(entry, PAYLOAD_FIELDS, self.payload)

    def answer(self, invocation_id: str, wanted: list[bytes]) -> list[Blobs]:
        """``Blobs`` frames answering a ``FetchBlobs`` for ``wanted`` (the last one ``final``)."""
        frames: list[Blobs] = []
        batch: list[BlobData] = []
        size = 0
        for sha in dict.fromkeys(wanted):
            data = self.sources.get(sha)
            if data is None:
                continue
            if batch and size + len(data) > START_BLOB_BYTES:
                frames.append(Blobs(invocation_id, batch, final=False))
                batch, size = [], 0
            batch.append(BlobData(sha, data))
            size += len(data)
            if self._held is not None:
                self._held.add(sha, len(data))
        missing = [sha for sha in dict.fromkeys(wanted) if sha not in self.sources]
        frames.append(Blobs(invocation_id, batch, final=True, missing=missing))
        return frames


def note_held(entry: Entry, threshold: int, held: HeldBlobs, ref_of: RefOf) -> None:
    """A handler sent ``entry``: the SDK keeps its payloads over ``threshold``, so count them as
    held. (One within it that looks like a reference is stored as a blob too, but not counted: a
    replay that needs it sends it when the handler asks.)"""
    for payload in blob_payloads(entry, threshold):
        if len(payload) > threshold:
            held.add(ref_of(payload).sha256, len(payload))
