"""The store: write batches applied to real LMDB agree with a dict model; records round-trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from handler_sdk.protocol import ClearAllState, Input, Run, SetState
from sidecar.clock import InboxClock
from sidecar.ids import IdGenerator
from sidecar.store import Changes, InvocationRecord, Store, StoreError, WriteBatch, apply_batch
from sidecar.store import keys
from sidecar.store.environment import DATABASES


class DictModel:
    def __init__(self) -> None:
        self.dbs: dict[str, dict[bytes, bytes]] = {name: {} for name in DATABASES}

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.dbs[db][key] = value

    def delete(self, db: str, key: bytes) -> None:
        self.dbs[db].pop(key, None)

    def keys_with_prefix(self, db: str, prefix: bytes) -> list[bytes]:
        return sorted(k for k in self.dbs[db] if k.startswith(prefix))


short_bytes = st.binary(min_size=1, max_size=6)
db_names = st.sampled_from(["state", "journal"])
ops = st.one_of(
    st.tuples(st.just("put"), db_names, short_bytes, st.binary(max_size=8)),
    st.tuples(st.just("delete"), db_names, short_bytes, st.just(b"")),
    st.tuples(st.just("prefix"), db_names, st.binary(max_size=2), st.just(b"")),
)


def _batch(spec: list[tuple[str, str, bytes, bytes]]) -> WriteBatch:
    batch = WriteBatch()
    for kind, db, key, value in spec:
        if kind == "put":
            batch.put(db, key, value)
        elif kind == "delete":
            batch.delete(db, key)
        else:
            batch.delete_prefix(db, key)
    return batch


def _dump(store: Store, db: str) -> dict[bytes, bytes]:
    with store._env.begin(db=store._dbs[db]) as txn:  # reading raw contents is this test's point
        return dict(txn.cursor())


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(ops, max_size=12), min_size=1, max_size=5))
def test_batches_applied_to_lmdb_match_the_dict_model(tmp_path_factory, batches) -> None:
    store = Store(tmp_path_factory.mktemp("lmdb"), durability="none", map_size=1 << 24)
    model = DictModel()
    for spec in batches:
        batch = _batch(spec)
        store.write_now(batch)
        apply_batch(model, batch)
    for db in ("state", "journal"):
        assert _dump(store, db) == model.dbs[db]
    asyncio.run(store.close())


@given(batch=st.lists(ops, max_size=12).map(_batch))
def test_write_batches_round_trip_through_msgpack(batch: WriteBatch) -> None:
    import msgspec

    assert msgspec.msgpack.decode(msgspec.msgpack.encode(batch), type=WriteBatch) == batch


def _record(invocation_id: str, key: str = "k") -> InvocationRecord:
    return InvocationRecord(id=invocation_id, service="Counter", handler="add", key=key, handler_kind="exclusive",
                            status="running", deployment_id="dp_1", created_ms=1, modified_ms=1)


async def test_group_commit_keeps_submit_order_and_state_follows_the_journal(tmp_path: Path) -> None:
    store = Store(tmp_path, durability="fsync", map_size=1 << 26)
    await store.start()
    record = _record("inv_A")
    futures = []
    first = Changes()
    first.put_invocation(record)
    first.enqueue(record)
    first.append_entry(record, 0, Input(b"1"))
    futures.append(store.submit(first))
    for index, entry in enumerate([SetState("a", b"1"), Run("step", value=b"2"), SetState("b", b"3")], start=1):
        changes = Changes()
        changes.append_entry(record, index, entry)
        futures.append(store.submit(changes))
    await asyncio.gather(*futures)
    assert store.read_journal("inv_A") == [Input(b"1"), SetState("a", b"1"), Run("step", value=b"2"),
                                           SetState("b", b"3")]
    assert store.read_state("Counter", "k") == {"a": b"1", "b": b"3"}
    assert store.scan_inbox() == ["inv_A"]
    commits, batches = store.commits
    assert batches == 4 and 1 <= commits <= 4

    clear = Changes()
    clear.append_entry(record, 4, ClearAllState())
    record.status, record.completed_ms = "completed", 10
    clear.finish(record)
    await store.submit(clear)
    assert store.read_state("Counter", "k") == {}
    assert store.scan_inbox() == []
    assert store.finished_before(11, limit=10) == ["inv_A"]
    assert store.get_invocation("inv_A").status == "completed"
    await store.close()


async def test_an_urgent_write_is_told_before_the_queued_ones_and_in_order(tmp_path: Path) -> None:
    """A write a handler is blocked on hears back synchronously, in submit order, and takes what
    was queued before it along; once the writer is gone it hears why at once."""
    store = Store(tmp_path, durability="fsync", map_size=1 << 26)
    await store.start()
    record = _record("inv_U")
    heard: list[tuple[str, str | None]] = []
    queued = Changes()
    queued.append_entry(record, 0, Input(b"1"))
    plain = store.submit(queued)
    plain.add_done_callback(lambda _: heard.append(("plain", None)))
    urgent = Changes()
    urgent.append_entry(record, 1, Run("step", value=b"2"))
    done = store.submit(urgent, lambda error: heard.append(("urgent", error)))
    await done
    assert heard[0] == ("urgent", None)  # before any future's callback had its turn
    await asyncio.sleep(0)
    assert heard == [("urgent", None), ("plain", None)]
    assert store.read_journal("inv_U") == [Input(b"1"), Run("step", value=b"2")]
    await store.close()


async def test_an_urgent_write_hears_at_once_when_the_writer_is_gone(tmp_path: Path) -> None:
    lost: list[str] = []
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    await store.start(on_lost=lost.append)
    process = store._writer_process  # killing the writer is the point of this test
    assert process is not None
    process.kill()
    await asyncio.to_thread(process.wait)
    heard: list[str | None] = []
    with pytest.raises(StoreError):
        await store.submit(Changes(), heard.append)
    assert len(heard) == 1 and heard[0] is not None and lost
    await store.close()


def test_object_prefixes_never_collide() -> None:
    assert keys.object_prefix("ab", "c") != keys.object_prefix("a", "bc")
    assert not keys.state_key("a", "bc", "x").startswith(keys.object_prefix("ab", "c"))
    assert keys.object_prefix("svc", None) != keys.object_prefix("svc", "")


@given(service=st.text(min_size=1, max_size=8), key=st.one_of(st.none(), st.text(max_size=8)),
       seq=st.integers(0, 2**64 - 1))
def test_inbox_keys_give_back_their_invocation(service: str, key: str | None, seq: int) -> None:
    raw = keys.inbox_key(service, key, seq, "inv_0123456789ABCDEFGHJKMNPQRS")
    assert keys.inbox_invocation_id(raw) == "inv_0123456789ABCDEFGHJKMNPQRS"


def test_an_inbox_keeps_arrival_order_for_invocations_made_in_one_millisecond(tmp_path: Path) -> None:
    """IDs made in one millisecond sort at random; the inbox's seq keeps the order they joined
    in, and finishing one removes exactly its entry."""
    ids, clock = IdGenerator(), InboxClock()
    made = [ids.invocation_id(3) for _ in range(300)]
    assert made != sorted(made)  # random within a millisecond: the ID alone cannot order them
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    records = []
    for invocation_id in made:
        record = _record(invocation_id, key="same")
        record.inbox_seq = clock.next()
        changes = Changes()
        changes.create(record, b"1", None)
        store.write_now(changes)
        records.append(record)
    assert store.scan_inbox() == made
    done = Changes()
    for record in records[::2]:
        record.status, record.completed_ms = "completed", 5
        done.finish(record)
    store.write_now(done)
    assert store.scan_inbox() == made[1::2]
    asyncio.run(store.close())


def test_the_inbox_clock_increases_and_goes_on_past_what_recovery_found() -> None:
    first = InboxClock()
    seqs = [first.next() for _ in range(1000)]  # faster than one a microsecond: it runs ahead
    assert seqs == sorted(set(seqs))
    restarted = InboxClock()
    restarted.observe(seqs[-1])  # the highest seq in the inboxes it recovers
    assert restarted.next() > seqs[-1]
    stepped_back = InboxClock()
    stepped_back.observe(seqs[-1] + 10**9)  # a wall clock that went back since those were made
    assert stepped_back.next() == seqs[-1] + 10**9 + 1


def test_read_journal_stops_at_a_gap_left_by_a_failed_write(tmp_path: Path) -> None:
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    record = _record("inv_G")
    changes = Changes()
    for index, entry in [(0, Input(b"1")), (1, Run("a", value=b"1")), (3, Run("c", value=b"3"))]:
        changes.append_entry(record, index, entry)
    store.write_now(changes)
    assert store.read_journal("inv_G") == [Input(b"1"), Run("a", value=b"1")]
    asyncio.run(store.close())
