"""The store: write batches applied to real LMDB agree with a dict model; records round-trip."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from handler_sdk.protocol import BLOB_MAGIC, ClearAllState, Input, Run, SetState
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
    # Values that look like blob references are stored as blobs instead (see test_store_blobs).
    st.tuples(st.just("put"), db_names, short_bytes, st.binary(max_size=8).filter(lambda v: BLOB_MAGIC not in v)),
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


async def test_a_batch_the_store_cannot_hold_fails_alone_and_the_store_goes_on(tmp_path: Path) -> None:
    lost: list[str] = []
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    await store.start(on_lost=lost.append)
    before, bad, after = WriteBatch(), WriteBatch(), WriteBatch()
    before.put("state", b"a", b"1")
    bad.put("state", b"k" * 600, b"2")  # past LMDB's 511-byte key limit
    after.put("state", b"c", b"3")
    results = await asyncio.gather(*(store.submit(b) for b in (before, bad, after)), return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreError) and results[1].refused and "cannot hold" in str(results[1])
    assert not store.full and not lost
    await store.submit(after)
    assert store._get("state", b"a") == b"1" and store._get("state", b"c") == b"3"
    assert store._get("state", b"k" * 500) is None
    await store.close()


async def test_a_full_map_fails_every_later_batch_until_there_is_room_again(tmp_path: Path) -> None:
    """What commits is a prefix of what was submitted, with no gap: once one batch finds no room,
    every batch submitted before its failure was heard of fails too, even one small enough to
    fit; after a delete makes room, writes succeed again with no restart."""
    lost: list[str] = []
    # Values stay inline (no blobs, which would store these zeros once): what they take is the point.
    store = Store(tmp_path, durability="none", map_size=8 << 20, blob_threshold=1 << 30)
    await store.start(on_lost=lost.append)
    batches = []
    for n in range(60):
        batch = WriteBatch()
        batch.put("state", b"big-%03d" % n, bytes(200 * 1024))
        batches.append(batch)
        if n % 7 == 6:  # small batches in between, that would fit where a big one does not
            small = WriteBatch()
            small.put("state", b"small-%03d" % n, b"x")
            batches.append(small)
    results = await asyncio.gather(*(store.submit(b) for b in batches), return_exceptions=True)
    failed = [n for n, r in enumerate(results) if r is not None]
    assert failed and failed == list(range(failed[0], len(batches))), failed
    assert all(isinstance(results[n], StoreError) and not results[n].refused for n in failed)
    assert store.full and not lost
    committed = {n for n in range(len(batches)) if results[n] is None}
    for n, batch in enumerate(batches):
        assert (store._get("state", batch.ops[0].key) is not None) == (n in committed)

    with pytest.raises(StoreError):  # still no room for a big one
        await store.submit(batches[failed[0]])
    with pytest.raises(StoreError):  # submitted before everyone was told of that failure
        await store.submit(WriteBatch())
    await asyncio.sleep(0)  # they have been now
    purge = WriteBatch()
    for n in range(10):
        purge.delete("state", b"big-%03d" % n)
    await store.submit(purge)
    await store.submit(batches[failed[0]])
    assert not store.full and not lost
    await store.close()


async def test_a_map_full_of_small_records_can_still_be_purged(tmp_path: Path) -> None:
    """LMDB alone cannot commit deletes in a map that small writes filled (each delete copies
    pages it cannot take from anywhere): the map keeps headroom that only deletes may use."""
    store = Store(tmp_path, durability="none", map_size=1 << 20)
    await store.start()
    written = 0
    while True:
        batch = WriteBatch()
        for n in range(written, written + 50):
            batch.put("state", b"k%08d" % n, bytes(100))
        try:
            await store.submit(batch)
        except StoreError:
            break
        written += 50
    assert written > 1000 and store.full
    await asyncio.sleep(0)
    for start in range(0, written, 200):  # purges, one batch after another
        purge = WriteBatch()
        for n in range(start, min(written, start + 200)):
            purge.delete("state", b"k%08d" % n)
        await store.submit(purge)
    again = WriteBatch()
    again.put("state", b"again", b"1")
    await store.submit(again)
    assert store._get("state", b"again") == b"1" and store._get("state", b"k%08d" % 0) is None
    await store.close()


@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.sampled_from([1, 100 * 1024, 300 * 1024]), min_size=5, max_size=40),
       pauses=st.sets(st.integers(0, 39), max_size=4))
def test_what_commits_is_always_a_prefix_of_what_was_submitted(tmp_path_factory: pytest.TempPathFactory,
                                                               sizes: list[int], pauses: set[int]) -> None:
    """Whatever the mix of writes that fit and writes that do not, and wherever the client
    pauses to hear answers, no batch commits past one that failed before the client knew."""

    async def run() -> None:
        store = Store(tmp_path_factory.mktemp("prefix"), durability="none", map_size=2 << 20)
        await store.start()
        futures: list[asyncio.Future[None]] = []
        known_failed = 0  # failures the client had heard of when it submitted each batch
        heard: list[int] = []
        for n, size in enumerate(sizes):
            if n in pauses:
                await asyncio.gather(*futures, return_exceptions=True)
                await asyncio.sleep(0)
                known_failed = sum(1 for f in futures if f.exception() is not None)
            heard.append(known_failed)
            batch = WriteBatch()
            batch.put("state", b"b-%03d" % n, bytes(size))
            futures.append(store.submit(batch))
        await asyncio.gather(*futures, return_exceptions=True)
        ok = [f.exception() is None for f in futures]
        for n in range(len(sizes)):
            stored = store._get("state", b"b-%03d" % n) is not None
            assert stored == ok[n]
            # A batch submitted before the client heard of an earlier failure must not commit.
            unheard = [m for m in range(n) if not ok[m] and sum(not x for x in ok[:m + 1]) > heard[n]]
            assert not (ok[n] and unheard), (n, sizes, pauses)
        await store.close()

    asyncio.run(run())
