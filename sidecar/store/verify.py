"""``sidecar check``: whether a data directory holds what the sidecar wrote, without serving it.

``check.py`` refuses files LMDB must not map; this reads what is inside, from one read
transaction (so a serving sidecar may keep writing): the layout is one this sidecar knows, every
invocation record decodes, every journal is prefix-complete (entries 0..n-1, none missing, each
decodable, each belonging to a record), every blob reference resolves (the blob is stored, its
bytes hash to its name, and ``blob_refs`` counts exactly the values that refer to it), and every
schedule decodes and is filed under its own name.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import zstandard

from handler_sdk.protocol import entry_decoder

from . import keys
from .blobs import PAYLOAD_DBS, decompress, refs_in
from .environment import open_snapshot_source
from .layout import FORMAT, recorded_format
from .records import BlobCount, InvocationRecord, ScheduleRecord

#: Problems listed at most; past that only their number is told.
MAX_LISTED = 100

_record_decoder = msgspec.msgpack.Decoder(InvocationRecord)
_count_decoder = msgspec.msgpack.Decoder(BlobCount)
_schedule_decoder = msgspec.msgpack.Decoder(ScheduleRecord)


class Verdict(msgspec.Struct, kw_only=True):
    path: str
    layout: int | None
    invocations: int = 0
    journal_entries: int = 0
    blobs: int = 0
    schedules: int = 0
    #: What is wrong, one line each (at most ``MAX_LISTED``); ``problem_count`` counts them all.
    problems: list[str] = []
    problem_count: int = 0
    #: What is not wrong but worth knowing (an older layout, upgraded when served).
    notes: list[str] = []

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(text)


def verify(path: str | Path) -> Verdict:
    """Check the data directory at ``path``. Raises ``check.DamagedStore`` or ``LayoutError``
    where it cannot be opened at all."""
    env, dbs = open_snapshot_source(path)
    try:
        with env.begin() as txn:
            layout = recorded_format(txn, dbs["meta"]) if "meta" in dbs else None
            verdict = Verdict(path=str(path), layout=layout)
            if layout is None or "invocations" not in dbs:
                verdict.problem("no layout recorded: not a sidecar data directory, or one never opened by a sidecar")
                return verdict
            if layout < FORMAT:
                verdict.notes.append(f"layout {layout}: a sidecar brings it to layout {FORMAT} when it serves it")
            ids = _check_records(txn, dbs["invocations"], verdict)
            if "journal" in dbs:
                _check_journals(txn, dbs["journal"], ids, verdict)
            if "blobs" in dbs and "blob_refs" in dbs:
                _check_blobs(txn, dbs, verdict)
            if "schedules" in dbs:
                _check_schedules(txn, dbs["schedules"], verdict)
            return verdict
    finally:
        env.close()


def _check_records(txn: lmdb.Transaction[bytes], db: Any, verdict: Verdict) -> set[bytes]:
    ids: set[bytes] = set()
    for raw_key, raw in txn.cursor(db=db):
        verdict.invocations += 1
        ids.add(bytes(raw_key))
        try:
            record = _record_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            verdict.problem(f"invocation {_text(raw_key)}: its record cannot be read: {exc}")
            continue
        if record.id.encode() != raw_key:
            verdict.problem(f"invocation {_text(raw_key)}: its record says it is {record.id!r}")
    return ids


def _journals(txn: lmdb.Transaction[bytes], db: Any) -> Iterator[tuple[bytes, list[tuple[int, bytes]]]]:
    """Each invocation's journal entries, as (index, raw) in key order: journal keys are the ID,
    ``/``, and the index in 4 big-endian bytes, so an invocation's entries come together."""
    current, entries = b"", list[tuple[int, bytes]]()
    for raw_key, raw in txn.cursor(db=db):
        owner = bytes(raw_key[:-5])
        if owner != current and entries:
            yield current, entries
            entries = []
        current = owner
        entries.append((keys.journal_index(bytes(raw_key)), bytes(raw)))
    if entries:
        yield current, entries


def _check_journals(txn: lmdb.Transaction[bytes], db: Any, ids: set[bytes], verdict: Verdict) -> None:
    for owner, entries in _journals(txn, db):
        verdict.journal_entries += len(entries)
        name = _text(owner)
        if owner not in ids:
            verdict.problem(f"invocation {name}: {len(entries)} journal entries but no invocation record")
        for expected, (index, raw) in enumerate(entries):
            if index != expected:
                verdict.problem(f"invocation {name}: its journal lacks entry {expected} (the next one is {index})")
                break
            try:
                entry_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                verdict.problem(f"invocation {name}: journal entry {index} cannot be read: {exc}")


def _check_blobs(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], verdict: Verdict) -> None:
    referred: Counter[bytes] = Counter()
    for db in sorted(PAYLOAD_DBS & dbs.keys()):
        for raw in txn.cursor(db=dbs[db]).iternext(keys=False):
            referred.update(refs_in(bytes(raw)))
    counted = {bytes(sha): raw for sha, raw in txn.cursor(db=dbs["blob_refs"])}
    for sha, stored in txn.cursor(db=dbs["blobs"]):
        verdict.blobs += 1
        sha = bytes(sha)
        try:
            payload = decompress(sha, bytes(stored))
        except zstandard.ZstdError as exc:
            verdict.problem(f"blob {sha.hex()}: its bytes cannot be decompressed: {exc}")
            continue
        if hashlib.sha256(payload).digest() != sha:
            verdict.problem(f"blob {sha.hex()}: its bytes do not hash to its name")
        if sha not in referred:
            verdict.problem(f"blob {sha.hex()}: stored, but no value refers to it")
    for sha, references in referred.items():
        if txn.get(sha, db=dbs["blobs"]) is None:
            verdict.problem(f"blob {sha.hex()}: {references} stored values refer to it, but it is not stored")
        held = counted.get(sha)
        count = None if held is None else _count_decoder.decode(held).count
        if count != references:
            verdict.problem(f"blob {sha.hex()}: blob_refs counts {count} references, {references} values hold one")
    for sha in counted.keys() - referred.keys():
        verdict.problem(f"blob {sha.hex()}: blob_refs counts references, but no value holds one")


def _check_schedules(txn: lmdb.Transaction[bytes], db: Any, verdict: Verdict) -> None:
    for raw_key, raw in txn.cursor(db=db):
        verdict.schedules += 1
        try:
            record = _schedule_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            verdict.problem(f"schedule {_text(raw_key)}: its record cannot be read: {exc}")
            continue
        if keys.schedule_key(record.name) != raw_key:
            verdict.problem(f"schedule {_text(raw_key)}: its record says it is {record.name!r}")


def _text(raw: bytes) -> str:
    return raw.decode(errors="backslashreplace")

