"""Costs in the store: a row per step that reported one, written with its journal entry, deleted
with its invocation; read by ranges that match what a filter names, page by page."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import lmdb
import pytest
from multidict import MultiDict
from hypothesis import given, settings, strategies as st

from handler_sdk.protocol import Input, Run, SetState
from sidecar.http.costs import CostSums, journal_cost, parse_costs_query, parse_time, sum_costs
from sidecar.http.errors import HTTPProblem
from sidecar.ids import IdGenerator
from sidecar.store import Changes, InvocationRecord, Store
from sidecar.store.environment import DATABASES
from sidecar.store.lmdb_store import CostFilter, encode_entry, encode_record

_ids = IdGenerator()


def _record(service: str = "Agent", handler: str = "run", key: str | None = "k") -> InvocationRecord:
    return InvocationRecord(id=_ids.invocation_id(), service=service, handler=handler, key=key,
                            handler_kind="exclusive", status="running", deployment_id="dp_1", created_ms=1,
                            modified_ms=7)


def _store(path: Path) -> Store:
    return Store(path, durability="none", map_size=1 << 26)


def _read_all(store: Store, wanted: CostFilter, budget: int = 1000) -> list[tuple[str, str, float]]:
    """Every matching row, following the pages; each page within its budget."""
    found: list[tuple[str, str, float]] = []
    start: bytes | None = b""
    while start is not None:
        page = store.read_costs(wanted, start=start, budget=budget)
        found.extend((row.invocation_id, row.step, row.cost) for row in page.rows)
        start = page.next
    return found


def test_a_step_with_a_cost_is_filed_in_the_batch_that_journals_it_and_purged_with_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    record, other = _record(), _record()
    changes = Changes()
    for invocation in (record, other):
        changes.create(invocation, b"1", None)
        changes.append_entry(invocation, 1, Run("plan", value=b"1", cost=0.25, attempts=2, variant="fallback"))
        changes.append_entry(invocation, 2, Run("free", value=b"2"))  # reported nothing: no row
        changes.append_entry(invocation, 3, SetState("s", b"3"))
    store.write_now(changes)
    rows = store.read_costs(CostFilter()).rows
    assert sorted((r.invocation_id, r.step, r.cost, r.attempts, r.variant) for r in rows) == sorted(
        (i.id, "plan", 0.25, 2, "fallback") for i in (record, other))

    again = Changes()  # the same entry written again (a later attempt past a gap): its row, replaced
    again.append_entry(record, 1, Run("plan", value=b"1", cost=0.5))
    store.write_now(again)
    assert sorted(_read_all(store, CostFilter())) == sorted([(record.id, "plan", 0.5), (other.id, "plan", 0.25)])

    record.status, record.completed_ms = "completed", 9
    gone = Changes()
    gone.finish(record)
    gone.purge(record, None)
    store.write_now(gone)
    assert _read_all(store, CostFilter()) == [(other.id, "plan", 0.25)]
    asyncio.run(store.close())


def test_a_restart_copies_entries_without_counting_their_cost_again(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first, restarted = _record(), _record()
    changes = Changes()
    changes.create(first, b"1", None)
    changes.append_entry(first, 1, Run("plan", value=b"1", cost=1.5))
    changes.create(restarted, b"1", None)
    changes.complete_entry(restarted, 1, Run("plan", value=b"1", cost=1.5))  # how a restart copies
    store.write_now(changes)
    assert _read_all(store, CostFilter()) == [(first.id, "plan", 1.5)]
    assert journal_cost(store.read_journal(restarted.id)) == 1.5  # its own journal still says so
    assert journal_cost([Input(b"1"), Run("free")]) is None
    asyncio.run(store.close())


_SERVICES = ["Agent", "Tools", "S" * 1024]
_HANDLERS = ["run", "plan", "h" * 700]
_KEYS = [None, "a", "b", "é" * 512]
_rows = st.lists(st.tuples(st.sampled_from(_SERVICES), st.sampled_from(_HANDLERS), st.sampled_from(_KEYS),
                           st.sampled_from(["llm", "search"]), st.sampled_from([0.5, 1.25, 3.0]),
                           st.integers(0, 3)), max_size=25)
_filters = st.builds(CostFilter, service=st.sampled_from([None, *_SERVICES, "Nope"]),
                     handler=st.sampled_from([None, *_HANDLERS]), key=st.sampled_from([None, *_KEYS[1:]]),
                     step=st.sampled_from([None, "llm", "search"]), since_ms=st.sampled_from([None, 0, 2, 4]))


@settings(max_examples=80, deadline=None)
@given(rows=_rows, wanted=_filters, budget=st.integers(1, 8))
def test_every_filter_reads_what_a_filter_over_every_row_finds(
        tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, str, str | None, str, float, int]],
        wanted: CostFilter, budget: int) -> None:
    """Whatever the filter and however small the pages, the rows are those that match, once
    each, an invocation's together; the longest names (hashed in the keys) included."""
    store = _store(tmp_path_factory.mktemp("lmdb"))
    expected = []
    changes = Changes()
    for service, handler, key, step, cost, at_ms in rows:
        record = _record(service, handler, key)
        changes.create(record, b"1", None)
        for index in (1, 2):
            changes.put_cost(record, index, Run(step, cost=cost * index), at_ms)
            if (wanted.service in (None, service) and wanted.handler in (None, handler)
                    and wanted.key in (None, key) and wanted.step in (None, step)
                    and (wanted.since_ms is None or at_ms >= wanted.since_ms)):
                expected.append((record.id, step, cost * index))
    store.write_now(changes)
    found = _read_all(store, wanted, budget)
    assert sorted(found) == sorted(expected)
    places: dict[str, list[int]] = {}
    for place, (invocation_id, _, _) in enumerate(found):
        places.setdefault(invocation_id, []).append(place)
    assert all(p == list(range(p[0], p[0] + len(p))) for p in places.values())
    asyncio.run(store.close())


def test_a_key_is_found_by_seeking_past_the_other_keys_not_by_reading_them(tmp_path: Path) -> None:
    """Among 3,000 rows under two handlers, one key's rows with the handler left out: a page of a
    dozen keys read or sought to is enough (one seek per handler)."""
    store = _store(tmp_path)
    changes = Changes()
    for n in range(1500):
        for handler in ("run", "plan"):
            record = _record(handler=handler, key=f"k{n:04}")
            changes.put_cost(record, 1, Run("llm", cost=1.0), 1)
    store.write_now(changes)
    page = store.read_costs(CostFilter(service="Agent", key="k0750"), budget=12)
    assert page.next is None and [row.cost for row in page.rows] == [1.0, 1.0]
    page = store.read_costs(CostFilter(handler="plan", key="k0001", service="Agent"), budget=3)
    assert page.next is None and len(page.rows) == 1
    asyncio.run(store.close())


async def test_sums_over_many_pages_add_up_as_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    changes = Changes()
    records = [_record(key=f"k{n % 7}") for n in range(40)]
    for record in records:
        for index in range(1, 6):
            changes.put_cost(record, index, Run("llm" if index % 2 else "search", cost=0.1), 5)
    store.write_now(changes)
    sums = await sum_costs(store, CostFilter(service="Agent"), budget=7)
    assert sums == CostSums(total=20.0, invocations=40, by_step={"llm": 12.0, "search": 8.0})
    assert await sum_costs(store, CostFilter(service="Agent", key="k3", step="search")) == CostSums(
        total=math.fsum([0.1] * 2 * 6), invocations=6, by_step={"search": math.fsum([0.1] * 12)})
    assert await sum_costs(store, CostFilter(since_ms=6)) == CostSums(total=0.0, invocations=0, by_step={})
    await store.close()


def test_a_layout_3_directory_gets_the_costs_its_journals_hold(tmp_path: Path) -> None:
    """A directory written before the ``costs`` database (layout 3): opening it files them."""
    record, plain = _record(), _record(service="Tools", handler="quote", key=None)
    env = lmdb.open(str(tmp_path), max_dbs=len(DATABASES) + 1, map_size=1 << 24)
    dbs = {name: env.open_db(name.encode()) for name in DATABASES if name != "costs"}
    with env.begin(write=True) as txn:
        txn.put(b"format", b"3", db=dbs["meta"])
        for invocation in (record, plain):
            txn.put(invocation.id.encode(), encode_record(invocation), db=dbs["invocations"])
        journal = [(record.id, 1, Run("plan", value=b"1", cost=2.5)), (record.id, 2, Run("cost", value=b"x")),
                   (record.id, 3, SetState("cost", b"1")), (plain.id, 1, Run("q", value=b"1", cost=0.75)),
                   ("inv_no_record_00000000000000", 1, Run("lost", cost=9.0))]
        for invocation_id, index, entry in journal:
            txn.put(invocation_id.encode() + b"/" + index.to_bytes(4, "big"), encode_entry(entry), db=dbs["journal"])
    env.close()

    store = _store(tmp_path)
    assert store._get("meta", b"format") == b"7"  # the recorded layout is this test's point
    rows = store.read_costs(CostFilter()).rows
    assert sorted((r.invocation_id, r.step, r.cost, r.recorded_ms) for r in rows) == sorted(
        [(record.id, "plan", 2.5, 7), (plain.id, "q", 0.75, 7)])
    assert [r.step for r in store.read_costs(CostFilter(service="Tools", handler="quote")).rows] == ["q"]
    asyncio.run(store.close())


@pytest.mark.parametrize("query, message", [
    ({"key": "a"}, "key needs service"),
    ({"handler": "run"}, "handler needs service"),
    ({"service": "Agent", "since": "yesterday"}, "since must be an ISO 8601 time"),
    ({"since": "2025-13-01T00:00:00Z"}, "since must be an ISO 8601 time"),
    ({"servce": "Agent"}, "unknown parameter 'servce'"),
    ({"service": "S" * 1025}, "service name is 1025 bytes long"),
])
def test_bad_cost_queries_are_refused_with_a_reason(query: dict[str, str], message: str) -> None:
    with pytest.raises(HTTPProblem) as refused:
        parse_costs_query(MultiDict(query))
    assert refused.value.status == 400 and message in refused.value.message


def test_a_cost_query_names_its_filter_once() -> None:
    with pytest.raises(HTTPProblem, match="service given more than once"):
        parse_costs_query(MultiDict([("service", "a"), ("service", "b")]))
    assert parse_costs_query(MultiDict({"service": "Agent", "key": "k", "step": "llm", "since": "1000"})) == \
        CostFilter(service="Agent", key="k", step="llm", since_ms=1000)


@pytest.mark.parametrize("text, ms", [
    ("1700000000000", 1_700_000_000_000), ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14T22:13:20.5+00:00", 1_700_000_000_500), ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ("2023-11-14T22:13:20", 1_700_000_000_000),  # no offset: UTC, as every time the sidecar shows
])
def test_since_is_an_iso_time_or_epoch_milliseconds(text: str, ms: int) -> None:
    assert parse_time(text) == ms
