"""Identifiers of any allowed length: every key layout fits LMDB, no two identifiers share a key,
no object's keys fall under another object's prefix, names read back exactly; and longer ones are
found wherever a client or a handler can send them."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

from hypothesis import example, given, settings, strategies as st

from handler_sdk.protocol import (
    MAX_IDENTIFIER_BYTES, Call, ClearState, CompleteAwakeable, CompletePromise, GetPromise, GetState, PeekPromise, Run,
    Send, SetState, identifier_problem,
)
from sidecar.invoker.identifiers import entry_identifier_problem
from sidecar.process.partitions import PartitionMap
from sidecar.store import Changes, Store
from sidecar.store import keys
from sidecar.store.records import PromiseRecord, ResolutionSpec

INVOCATION_ID = "inv_0123456789ABCDEFGHJKMNPQRS"


def _fits(text: str) -> bool:
    return len(text.encode()) <= MAX_IDENTIFIER_BYTES


#: Text of 0..1,024 UTF-8 bytes: short, around LMDB's 511, and at the limit, in 1- to 4-byte characters.
identifiers = st.one_of(
    st.text(max_size=8),
    st.builds(lambda c, n: c * n, st.sampled_from(["k", "é", "€", "😀"]), st.integers(0, MAX_IDENTIFIER_BYTES)),
    st.text(min_size=100, max_size=400),
).filter(_fits)
objects = st.tuples(identifiers, st.one_of(st.none(), identifiers))


def _layouts(service: str, key: str | None, name: str, handler: str) -> dict[str, bytes]:
    found = {
        "inbox": keys.inbox_key(service, key, 2**63 + 1, INVOCATION_ID),
        "idempotency": keys.idempotency_key(service, key, handler, name),
    }
    if key is not None:
        found["state"] = keys.state_key(service, key, name)
    return found


@settings(max_examples=200, deadline=None)
@example(first=("Counter", "k" * 435), second=("Counter", "k" * 436), names=("n", "n"), handlers=("add", "add"))
@example(first=("Counter", "k" * 600), second=("Counter", "k" * 601), names=("", ""), handlers=("add", "add"))
@example(first=("C", None), second=("C", "k" * 900), names=("é" * 512, "é" * 512), handlers=("h", "h"))
@given(first=objects, second=objects, names=st.tuples(identifiers, identifiers),
       handlers=st.tuples(identifiers, identifiers))
def test_every_layout_fits_and_is_injective_and_prefix_free(
    first: tuple[str, str | None], second: tuple[str, str | None], names: tuple[str, str], handlers: tuple[str, str],
) -> None:
    a = _layouts(*first, names[0], handlers[0])
    b = _layouts(*second, names[1], handlers[1])
    for layout in (a, b):
        assert all(len(raw) <= keys.MAX_KEY_BYTES for raw in layout.values()), {k: len(v) for k, v in layout.items()}
    prefix_a, prefix_b = keys.object_prefix(*first), keys.object_prefix(*second)
    assert len(prefix_a) + 8 + len(INVOCATION_ID) <= keys.MAX_KEY_BYTES  # room for the inbox tail
    if first != second:
        assert not prefix_a.startswith(prefix_b) and not prefix_b.startswith(prefix_a)
        assert all(not raw.startswith(prefix_b) for raw in a.values())
    identities = {
        "inbox": (first == second),
        "idempotency": (first, names[0], handlers[0]) == (second, names[1], handlers[1]),
        "state": (first, names[0]) == (second, names[1]),
    }
    for layout, same in identities.items():
        if layout in a and layout in b:
            assert (a[layout] == b[layout]) == same, layout
    assert keys.inbox_invocation_id(a["inbox"]) == INVOCATION_ID


@given(service=st.text(min_size=1, max_size=8), key=st.one_of(st.none(), st.text(max_size=8)))
def test_short_keys_are_laid_out_and_partitioned_as_before(service: str, key: str | None) -> None:
    """Data written before long identifiers were hashed is found where it was."""
    def part(text: str) -> bytes:
        return len(text.encode()).to_bytes(2, "big") + text.encode()

    before = part(service) + (b"\x01" + part(key) if key is not None else b"\x00")
    assert keys.object_prefix(service, key) == before
    assert keys.inbox_key(service, key, 7, INVOCATION_ID) == before + (7).to_bytes(8, "big") + INVOCATION_ID.encode()
    assert keys.idempotency_key(service, key, "add", "idem") == before + part("add") + b"idem"
    if key is not None:
        assert keys.state_key(service, key, "count") == before + b"count"
        assert PartitionMap.single().of_key(service, key) == zlib.crc32(before) % 64


@settings(max_examples=25, deadline=None)
@given(key=identifiers, names=st.lists(identifiers, max_size=6, unique=True), gone=st.integers(0, 5))
def test_read_state_gives_back_every_exact_name(tmp_path_factory, key: str, names: list[str], gone: int) -> None:
    store = Store(tmp_path_factory.mktemp("lmdb"), durability="none", map_size=1 << 24)
    changes = Changes()
    for i, name in enumerate(names):
        changes.set_state("Counter", key, name, str(i).encode())
    neighbour = key + "x" if _fits(key + "x") else key[:-1]
    changes.set_state("Counter", neighbour, "other", b"n")  # another object's state stays its own
    store.write_now(changes)
    expected = {name: str(i).encode() for i, name in enumerate(names)}
    if names:
        cleared = Changes()
        cleared.clear_state("Counter", key, names[gone % len(names)])
        store.write_now(cleared)
        del expected[names[gone % len(names)]]
    assert store.read_state("Counter", key) == expected
    assert "other" in store.read_state("Counter", neighbour)
    asyncio.run(store.close())


def test_long_promise_names_and_resolutions_are_stored(tmp_path: Path) -> None:
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    changes = Changes()
    name = "p" * MAX_IDENTIFIER_BYTES
    changes.put_promise("Flow", "k" * MAX_IDENTIFIER_BYTES, name, PromiseRecord(done=True, value=b"1"))
    resolution = ResolutionSpec(sender_id=INVOCATION_ID, awakeable_id="awk_" + "a" * 1000, value=b"1")
    changes.put_outbox(resolution)
    store.write_now(changes)
    assert store.get_promise("Flow", "k" * MAX_IDENTIFIER_BYTES, name) == PromiseRecord(done=True, value=b"1")
    assert store.get_promise("Flow", "k" * MAX_IDENTIFIER_BYTES, name[:-1]) is None
    assert store.outbox() == [resolution]
    asyncio.run(store.close())


@given(text=st.one_of(st.text(), st.builds(lambda c, n: c * n, st.sampled_from(["k", "é", "😀"]),
                                            st.integers(200, 1100))))
def test_an_identifier_is_refused_exactly_when_it_is_over_the_limit(text: str) -> None:
    problem = identifier_problem("state name", text)
    size = len(text.encode(errors="surrogatepass"))
    assert (problem is None) == (size <= MAX_IDENTIFIER_BYTES)
    if problem is not None:
        assert problem.startswith(f"state name is {size} bytes long") and str(MAX_IDENTIFIER_BYTES) in problem


def test_the_sidecar_finds_every_identifier_a_handler_can_journal() -> None:
    over = "x" * (MAX_IDENTIFIER_BYTES + 1)
    for entry, what in [
        (SetState(name=over, value=b""), "state name"), (GetState(name=over), "state name"),
        (ClearState(name=over), "state name"), (GetPromise(name=over), "promise name"),
        (PeekPromise(name=over), "promise name"), (CompletePromise(name=over), "promise name"),
        (Call(service="S", handler="h", key=over), "object key"), (Send(service=over, handler="h"), "service name"),
        (Send(service="S", handler=over), "handler name"), (CompleteAwakeable(id=over), "awakeable ID"),
    ]:
        problem = entry_identifier_problem(entry)
        assert problem is not None and problem.startswith(what), entry
    at_limit = "x" * MAX_IDENTIFIER_BYTES
    assert entry_identifier_problem(SetState(name=at_limit, value=b"")) is None
    assert entry_identifier_problem(Call(service="S", handler="h", key=at_limit)) is None
    assert entry_identifier_problem(Run(name=over)) is None  # a step's name is never a key
