"""A data directory's layout: the inbox of a directory written before seqs is rewritten on open."""

from __future__ import annotations

import asyncio
from pathlib import Path

import lmdb
import pytest

from sidecar.ids import IdGenerator
from sidecar.store import Changes, InvocationRecord, LayoutError, Store
from sidecar.store import keys
from sidecar.store.environment import open_environment
from sidecar.store.lmdb_store import encode_record
from sidecar.store.records import InboxEntry


def _record(invocation_id: str, key: str) -> InvocationRecord:
    return InvocationRecord(id=invocation_id, service="Counter", handler="add", key=key, handler_kind="exclusive",
                            status="pending", deployment_id="dp_1", created_ms=1, modified_ms=1)


def _write_first_layout(path: Path, records: list[InvocationRecord]) -> None:
    """What the sidecar wrote before inbox seqs: inbox keys of object prefix + ID, no ``format``."""
    env, dbs = open_environment(path, durability="none", map_size=1 << 24)
    with env.begin(write=True) as txn:
        for record in records:
            txn.put(keys.object_prefix(record.service, record.key) + record.id.encode(),
                    encode_record(InboxEntry(exclusive=True)), db=dbs["inbox"])
            txn.put(record.id.encode(), encode_record(record), db=dbs["invocations"])
    env.close()


def test_a_first_layout_inbox_is_rewritten_in_its_order_and_its_records_can_finish(tmp_path: Path) -> None:
    ids = IdGenerator()
    made = sorted(ids.invocation_id() for _ in range(50))  # the old layout's order: by ID
    records = [_record(i, key=f"k{n % 3}") for n, i in enumerate(made)]
    _write_first_layout(tmp_path, records)

    store = Store(tmp_path, durability="none", map_size=1 << 24)
    inbox = store.scan_inbox()
    key_of = {r.id: r.key for r in records}
    for key in ("k0", "k1", "k2"):
        assert [i for i in inbox if key_of[i] == key] == [r.id for r in records if r.key == key]
    assert store._get("meta", b"format") == b"7"  # the recorded layout is this test's point
    upgraded = [store.get_invocation(r.id) for r in records]
    assert all(r is not None and r.inbox_seq > 0 for r in upgraded)
    done = Changes()
    for record in upgraded[:10]:
        assert record is not None
        record.status, record.completed_ms = "completed", 5
        done.finish(record)
    store.write_now(done)
    assert store.scan_inbox() == [i for i in inbox if i not in made[:10]]
    secret = store.awakeable_secret
    asyncio.run(store.close())

    again = Store(tmp_path, durability="none", map_size=1 << 24)  # the second open changes nothing
    assert len(again.scan_inbox()) == 40 and again.awakeable_secret == secret and len(secret) == 32
    asyncio.run(again.close())


def test_each_directory_gets_its_own_secret(tmp_path: Path) -> None:
    first, second = Store(tmp_path / "a", durability="none"), Store(tmp_path / "b", durability="none")
    assert first.awakeable_secret != second.awakeable_secret
    first.close_environment()
    second.close_environment()


def test_a_layout_newer_than_the_sidecar_is_refused_and_left_alone(tmp_path: Path) -> None:
    env, dbs = open_environment(tmp_path, durability="none", map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"99", db=dbs["meta"])
    env.close()
    with pytest.raises(LayoutError, match="layout 99 is newer"):
        Store(tmp_path, durability="none", map_size=1 << 24)
    env = lmdb.open(str(tmp_path), max_dbs=20)
    with env.begin(db=env.open_db(b"meta")) as txn:
        assert txn.get(b"format") == b"99" and txn.get(b"awakeable-secret") is None
    env.close()
