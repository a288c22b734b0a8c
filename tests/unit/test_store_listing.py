"""The invocation list: its indexes follow every write, and its pages are bounded work that,
followed from cursor to cursor, give every matching invocation once, newest first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from sidecar.http.errors import HTTPProblem
from sidecar.ids import IdGenerator
from sidecar.http.listing import ListQuery, cursor_of, list_page, parse_query
from sidecar.store import Changes, InvocationRecord, Store, keys, lmdb_store
from sidecar.store.environment import open_environment
from sidecar.store.lmdb_store import encode_record
from sidecar.store.records import ALL_STATUSES, FINISHED

_UNFINISHED = sorted(ALL_STATUSES - FINISHED)
_FINAL = sorted(FINISHED)
_TARGETS = [("Counter", "x"), ("Counter", "y"), ("Counter", None), ("Other", "x")]


def _record(invocation_id: str, service: str = "Counter", key: str | None = "k") -> InvocationRecord:
    return InvocationRecord(id=invocation_id, service=service, handler="add", key=key, handler_kind="exclusive",
                            status="pending", deployment_id="dp_1", created_ms=1, modified_ms=1)


def _finish(changes: Changes, record: InvocationRecord, status: str = "completed") -> None:
    record.status, record.completed_ms = status, 5
    changes.finish(record)


class _Counting:
    """Counts the records the store decodes: the work a list call does, whatever the clock says."""

    def __init__(self, decoder: msgspec.msgpack.Decoder[InvocationRecord]) -> None:
        self.decoder = decoder
        self.decoded = 0

    def decode(self, raw: bytes) -> InvocationRecord:
        self.decoded += 1
        return self.decoder.decode(raw)


def test_a_rare_status_among_many_finished_invocations_is_listed_without_reading_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path, durability="none", map_size=1 << 28)
    ids = IdGenerator()
    changes = Changes()
    for n in range(20_000):
        record = _record(ids.invocation_id(), key=f"k{n % 50}")
        changes.create(record, b"1", None)
        _finish(changes, record)
    paused = []
    for _ in range(3):
        record = _record(ids.invocation_id(), key="stuck")
        changes.create(record, b"1", None)
        record.status = "paused"
        changes.put_invocation(record)
        paused.append(record.id)
    store.write_now(changes)
    counting = _Counting(lmdb_store._invocation_decoder)
    monkeypatch.setattr(lmdb_store, "_invocation_decoder", counting)

    listed = store.list_invocations(status="paused", limit=100)
    assert counting.decoded == 3  # the unfinished ones, not the 20,000 finished
    assert [r.id for r in listed.records] == sorted(paused, reverse=True) and listed.next is None

    counting.decoded = 0
    completed = store.list_invocations(status="completed", limit=10)
    assert counting.decoded == 10 and len(completed.records) == 10 and completed.next == completed.records[-1].id

    counting.decoded = 0  # a filter no index serves (a key without its service): one page's budget at most
    nowhere = store.list_invocations(key="nowhere", limit=10, budget=500)
    assert counting.decoded == 500 and nowhere.records == [] and nowhere.next is not None
    asyncio.run(store.close())


def _dump_keys(store: Store, db: str) -> set[bytes]:
    with store._env.begin(db=store._dbs[db]) as txn:  # the raw index is this test's point
        return set(txn.cursor().iternext(keys=True, values=False))


def _indexed(records: dict[str, InvocationRecord]) -> tuple[set[bytes], set[bytes]]:
    return ({keys.status_key(r.listed_as, r.id) for r in records.values()},
            {k for r in records.values() for k in keys.target_keys(r.service, r.key, r.id)})


_steps = st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["create", "move", "finish", "purge"]),
                            st.sampled_from(_UNFINISHED), st.sampled_from(_FINAL)), max_size=40)


@settings(max_examples=40, deadline=None)
@given(steps=_steps, targets=st.lists(st.sampled_from(_TARGETS), min_size=8, max_size=8))
def test_the_list_indexes_always_equal_a_filter_over_the_records(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, str, str, str]],
        targets: list[tuple[str, str | None]]) -> None:
    store = Store(tmp_path_factory.mktemp("lmdb"), durability="none", map_size=1 << 24)
    ids = [IdGenerator().invocation_id() for _ in range(8)]
    records: dict[str, InvocationRecord] = {}
    for slot, action, status, final in steps:
        record, changes = records.get(ids[slot]), Changes()
        if action == "create" and record is None:
            record = records[ids[slot]] = _record(ids[slot], *targets[slot])
            changes.create(record, b"1", None)
        elif action == "move" and record is not None and not record.finished:
            record.status = status
            changes.put_invocation(record)
        elif action == "finish" and record is not None and not record.finished:
            _finish(changes, record, final)
        elif action == "purge" and record is not None and record.finished:
            changes.purge(record, None)
            del records[record.id]
        else:
            continue
        store.write_now(changes)
        assert (_dump_keys(store, "by_status"), _dump_keys(store, "by_target")) == _indexed(records)
    asyncio.run(store.close())


def _live(overrides: dict[str, InvocationRecord], asked: list[list[str]]) -> Any:
    async def live(invocation_ids: list[str]) -> dict[str, InvocationRecord]:
        asked.append(invocation_ids)
        return {i: overrides[i] for i in invocation_ids if i in overrides}
    return live


async def _page_through(store: Store, query: ListQuery, live: Any, examined: int) -> list[InvocationRecord]:
    found: list[InvocationRecord] = []
    while True:
        records, after = await list_page(store, query, live, examined=examined)
        assert len(records) <= query.limit
        found.extend(records)
        if after is None:
            return found
        query = msgspec.structs.replace(query, before=after)


_made = st.lists(st.tuples(st.sampled_from(_TARGETS), st.sampled_from(_UNFINISHED + _FINAL), st.booleans()),
                 max_size=30)
_queries = st.builds(ListQuery, status=st.one_of(st.none(), st.sampled_from(sorted(ALL_STATUSES))),
                     service=st.sampled_from([None, "Counter", "Other"]), key=st.sampled_from([None, "x", "y"]),
                     limit=st.integers(1, 6))


@settings(max_examples=60, deadline=None)
@given(made=_made, queries=st.lists(_queries, min_size=1, max_size=6), examined=st.integers(1, 8))
def test_paging_gives_every_match_once_newest_first_with_live_statuses(
        tmp_path_factory: pytest.TempPathFactory, made: list[tuple[tuple[str, str | None], str, bool]],
        queries: list[ListQuery], examined: int) -> None:
    """Unfinished invocations may be live elsewhere with another status (``running`` is never
    stored): the list shows and filters by that one, asking only about the page's candidates."""
    store = Store(tmp_path_factory.mktemp("lmdb"), durability="none", map_size=1 << 24)
    generator = IdGenerator()
    changes = Changes()
    shown: dict[str, InvocationRecord] = {}
    live: dict[str, InvocationRecord] = {}
    for (service, key), status, running in made:
        record = _record(generator.invocation_id(), service, key)
        changes.create(record, b"1", None)
        if status in FINISHED:
            _finish(changes, record, status)
        else:
            record.status = status
            changes.put_invocation(record)
        shown[record.id] = record
        if running and not record.finished:
            live[record.id] = shown[record.id] = msgspec.structs.replace(record, status="running")
    store.write_now(changes)
    newest_first = sorted(shown.values(), key=lambda r: r.id, reverse=True)
    for query in queries:
        asked: list[list[str]] = []
        listed = asyncio.run(_page_through(store, query, _live(live, asked), examined))
        assert [r.id for r in listed] == [
            r.id for r in newest_first if query.status in (None, r.status) and query.service in (None, r.service)
            and query.key in (None, r.key)]
        assert [r.status for r in listed] == [shown[r.id].status for r in listed]
        assert all(len(ids) <= examined for ids in asked)
    asyncio.run(store.close())


def test_a_layout_2_directory_is_indexed_when_opened(tmp_path: Path) -> None:
    """Records written before the indexes are listed by status and service all the same."""
    generator = IdGenerator()
    records = [_record(generator.invocation_id(), *_TARGETS[n % 4]) for n in range(40)]
    for record in records[::2]:
        record.status, record.completed_ms = "failed", 5
    env, dbs = open_environment(tmp_path, durability="none", map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"2", db=dbs["meta"])
        for record in records:
            txn.put(record.id.encode(), encode_record(record), db=dbs["invocations"])
    env.close()

    store = Store(tmp_path, durability="none", map_size=1 << 24)
    assert store._get("meta", b"format") == b"7"  # the recorded layout is this test's point
    newest_first = sorted(records, key=lambda r: r.id, reverse=True)
    assert [r.id for r in store.list_invocations(status="failed").records] == [
        r.id for r in newest_first if r.status == "failed"]
    assert [r.id for r in store.list_invocations(service="Other").records] == [
        r.id for r in newest_first if r.service == "Other"]
    assert [r.id for r in store.list_invocations(status="pending", service="Counter", key="x").records] == [
        r.id for r in newest_first if (r.service, r.key, r.status) == ("Counter", "x", "pending")]
    asyncio.run(store.close())


@pytest.mark.parametrize("query, message", [
    ({"limit": "0"}, "limit must be between 1 and 1000"),
    ({"limit": "1001"}, "limit must be between 1 and 1000"),
    ({"limit": "ten"}, "limit must be an integer"),
    ({"cursor": "nonsense"}, "not a cursor"),
    ({"cursor": cursor_of("inv_0123456789ABCDEFGHJKMNPQRS")[:-2]}, "not a cursor"),
    ({"cursor": ""}, "not a cursor"),
    ({"status": "bogus"}, "unknown status 'bogus'"),
])
def test_bad_list_parameters_are_refused_with_a_reason(query: dict[str, str], message: str) -> None:
    with pytest.raises(HTTPProblem) as refused:
        parse_query(query)
    assert refused.value.status == 400 and message in refused.value.message


@given(text=st.text(max_size=60))
def test_no_cursor_text_makes_more_than_a_refusal(text: str) -> None:
    try:
        query = parse_query({"cursor": text})
    except HTTPProblem as refused:
        assert refused.status == 400
    else:
        assert query.before is not None and cursor_of(query.before) == text


def test_a_cursor_gives_back_its_place() -> None:
    invocation_id = IdGenerator().invocation_id()
    assert parse_query({"cursor": cursor_of(invocation_id), "limit": "7"}) == ListQuery(limit=7, before=invocation_id)


def test_the_longest_services_and_keys_are_listed_by_service_and_by_key(tmp_path: Path) -> None:
    """Identifiers up to 1,024 bytes: their index keys hash each part that would not fit."""
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    generator = IdGenerator()
    long_service, long_key = "S" * 1024, "é" * 512
    made = [_record(generator.invocation_id(), service, key)
            for service, key in [(long_service, long_key), (long_service, "k"), (long_service, None), ("S", long_key)]]
    changes = Changes()
    for record in made:
        changes.create(record, b"1", None)
    store.write_now(changes)
    newest_first = sorted(made, key=lambda r: r.id, reverse=True)
    assert [r.id for r in store.list_invocations(service=long_service).records] == [
        r.id for r in newest_first if r.service == long_service]
    assert [r.id for r in store.list_invocations(service=long_service, key=long_key).records] == [made[0].id]
    assert [r.id for r in store.list_invocations(service="S", key=long_key).records] == [made[3].id]
    purge = Changes()
    for record in made:
        _finish(purge, record)
        purge.purge(record, None)
    store.write_now(purge)
    assert _dump_keys(store, "by_status") == _dump_keys(store, "by_target") == set()
    asyncio.run(store.close())
