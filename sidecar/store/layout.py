"""What a data directory's ``meta`` database says about it, settled once when it is opened.

``format`` is the layout of the keys. Directories made before it was recorded have layout 1: their
inbox is filed by object prefix + invocation ID, which kept arrival order only while IDs counted
up within a millisecond. Layout 2 files it by object prefix + seq + ID. Opening a layout-1
directory rewrites its inbox in the same transaction that records layout 2, before anything is
served: the seq comes from the old key order (arrival order per key, as the old sidecar saw it),
and each record gets its seq so that finishing deletes the right key. One LMDB transaction, so a
crash leaves either layout whole, never a mix. Layout 3 adds the invocation list's indexes
(``by_status``, ``by_target``, see ``keys``), which the writes of ``changes`` keep from then on:
opening an older directory files every record there in the same way, in the transaction that
records layout 3, before anything is served. Layout 4 adds ``costs``, a row per journaled step
that reported a cost (``Changes.append_entry`` writes it with the entry): opening an older
directory files the costs its journals already hold, dated by their record's last change (when
each was journaled is not stored). Layout 5 adds ``blobs`` and ``blob_refs`` (``blobs.py``):
opening an older directory stores the payloads over ``blob_threshold`` it holds as blobs, once
per content, as the writer stores new ones. Layout 6 adds ``webhook_outbox``, which starts empty:
nothing to convert, but an older sidecar must not open a directory whose messages it would never
deliver. Layout 7 adds ``schedules`` (durable cron and intervals), which starts empty too: an
older sidecar would never fire them. A layout newer than this sidecar knows is refused.

``awakeable-secret`` signs awakeable IDs (``sidecar.awakeable_ids``): made with ``secrets`` the first
time the directory is opened, read by every worker from here, never sent to anyone.
"""

from __future__ import annotations

import secrets
from typing import Any

import lmdb
import msgspec

from handler_sdk.protocol import Run, entry_decoder, holds_blob_magic

from . import keys
from .blobs import PAYLOAD_DBS
from .records import CostRecord, InvocationRecord
from .txn import store_target

FORMAT = 7
_FORMAT_KEY = b"format"
_SECRET_KEY = b"awakeable-secret"

_decoder = msgspec.msgpack.Decoder(InvocationRecord)
_encoder = msgspec.msgpack.Encoder()


class LayoutError(Exception):
    """The data directory cannot be served by this sidecar (its message says why)."""


def recorded_format(txn: lmdb.Transaction[bytes], meta: Any) -> int | None:
    """The layout the directory's ``meta`` database records (``None``: none, a first layout)."""
    raw = txn.get(_FORMAT_KEY, db=meta)
    return None if raw is None else int(raw)


def refuse_newer_layout(env: lmdb.Environment, path: str) -> None:
    """Raise :class:`LayoutError` if the directory's layout is newer than :data:`FORMAT`."""
    try:
        meta = env.open_db(b"meta", create=False)
    except lmdb.NotFoundError:
        return  # a new directory
    with env.begin() as txn:
        found = recorded_format(txn, meta)
    if found is not None and found > FORMAT:
        raise LayoutError(f"{path}: data directory layout {found} is newer than this sidecar's ({FORMAT})")


def prepare(env: lmdb.Environment, dbs: dict[str, Any], blob_threshold: int) -> bytes:
    """Bring the directory to :data:`FORMAT` (``refuse_newer_layout`` checked it is not newer);
    its awakeable secret."""
    meta = dbs["meta"]
    with env.begin(write=True) as txn:
        found = recorded_format(txn, meta) or 1
        if found < 2:
            _file_inbox_by_seq(txn, dbs)
        if found < 3:
            _index_for_the_list(txn, dbs)
        if found < 4:
            _file_costs(txn, dbs)
        if found < 5:
            _store_blobs(txn, dbs, blob_threshold)
        if found < FORMAT:
            txn.put(_FORMAT_KEY, str(FORMAT).encode(), db=meta)
        secret = txn.get(_SECRET_KEY, db=meta)
        if secret is None:
            secret = secrets.token_bytes(32)
            txn.put(_SECRET_KEY, secret, db=meta)
    return bytes(secret)


def _file_inbox_by_seq(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
    """Layout 1 -> 2: every inbox key gets a seq, in the old key order, and so does its record."""
    inbox, invocations = dbs["inbox"], dbs["invocations"]
    old = list(txn.cursor(db=inbox))
    for seq, (old_key, value) in enumerate(old, start=1):
        new_key, invocation_id = keys.upgrade_inbox_key(old_key, seq)
        txn.delete(old_key, db=inbox)
        txn.put(new_key, value, db=inbox)
        raw = txn.get(invocation_id.encode(), db=invocations)
        if raw is not None:
            record = _decoder.decode(raw)
            record.inbox_seq = seq
            txn.put(invocation_id.encode(), _encoder.encode(record), db=invocations)


def _index_for_the_list(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
    """Layout 2 -> 3: every record gets the ``by_status`` and ``by_target`` entries that
    ``Changes.create`` and ``Changes.finish`` give a new one."""
    by_status, by_target = dbs["by_status"], dbs["by_target"]
    for raw in txn.cursor(db=dbs["invocations"]).iternext(keys=False):
        record = _decoder.decode(raw)
        txn.put(keys.status_key(record.listed_as, record.id), b"", db=by_status)
        for raw_key in keys.target_keys(record.service, record.key, record.id):
            txn.put(raw_key, b"", db=by_target)


#: How a ``Run`` entry that reported a cost spells the field (msgpack ``fixstr``): an entry without
#: it has no cost (defaults are omitted), so the upgrade decodes only the entries that have it.
_COST_FIELD = b"\xa4cost"


def _file_costs(txn: lmdb.Transaction[bytes], dbs: dict[str, Any]) -> None:
    """Layout 3 -> 4: every ``Run`` entry with a cost gets the ``costs`` row that
    ``Changes.append_entry`` gives a new one."""
    looked_up, record = b"", None
    for raw_key, raw in txn.cursor(db=dbs["journal"]):
        if _COST_FIELD not in raw:
            continue
        entry = entry_decoder.decode(raw)
        if type(entry) is not Run or entry.cost is None:
            continue
        invocation_id = raw_key[:-5]  # ID + "/" + index: journal keys come by invocation
        if invocation_id != looked_up:
            found = txn.get(invocation_id, db=dbs["invocations"])
            looked_up, record = invocation_id, None if found is None else _decoder.decode(found)
        if record is not None:
            txn.put(keys.cost_key(record.service, record.handler, record.key, record.id, keys.journal_index(raw_key)),
                    _encoder.encode(CostRecord.of(record.id, entry, record.modified_ms)), db=dbs["costs"])


def _store_blobs(txn: lmdb.Transaction[bytes], dbs: dict[str, Any], blob_threshold: int) -> None:
    """Layout 4 -> 5: every stored value that holds a payload over ``blob_threshold`` (or one
    that looks like a reference) is written again as the writer writes one now: as a reference."""
    target = store_target(txn, dbs, blob_threshold)
    for db in sorted(PAYLOAD_DBS):
        large = [(bytes(key), bytes(raw)) for key, raw in txn.cursor(db=dbs[db])
                 if len(raw) > blob_threshold or holds_blob_magic(raw)]
        for key, raw in large:
            target.put(db, key, raw)
