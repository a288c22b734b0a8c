"""Blobs: payloads over the threshold are stored once per content, their counts exact."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

from hypothesis import given, settings, strategies as st

from handler_sdk.protocol import BLOB_MAGIC, BlobRef, Call, Input, Run, SetState
from sidecar.store import Changes, InvocationRecord, Store
from sidecar.store import keys

THRESHOLD = 64
#: A few large payloads (shared between values, so that counts go above one) and small ones.
PAYLOADS = [bytes([n]) * (THRESHOLD + 1 + 40 * n) for n in range(4)] + [b"small", b'{"x": 1}', BLOB_MAGIC + b"!"]


def _record(invocation_id: str) -> InvocationRecord:
    return InvocationRecord(id=invocation_id, service="Obj", handler="h", key="k", handler_kind="exclusive",
                            status="pending", deployment_id="dp", created_ms=1, modified_ms=1)


def _large(payload: bytes) -> bool:
    return len(payload) > THRESHOLD or BLOB_MAGIC in payload


names = st.sampled_from(["a", "b", "c" * 600])  # the last is hashed in its key: a NamedState value
payloads = st.sampled_from(PAYLOADS)
invocations = st.sampled_from(["inv_1", "inv_2"])
operations = st.one_of(
    st.tuples(st.just("set"), names, payloads),
    st.tuples(st.just("clear"), names, st.just(b"")),
    st.tuples(st.just("clear_all"), st.just(""), st.just(b"")),
    st.tuples(st.just("journal"), invocations, payloads),
    st.tuples(st.just("complete"), invocations, payloads),
    st.tuples(st.just("purge"), invocations, st.just(b"")),
)


class Model:
    """What is live: every stored value's payloads, by where they are."""

    def __init__(self) -> None:
        self.state: dict[str, bytes] = {}
        self.journals: dict[str, list[list[bytes]]] = {"inv_1": [], "inv_2": []}

    def apply(self, kind: str, target: str, payload: bytes, batch: Changes) -> None:
        record = _record(target) if target.startswith("inv_") else _record("inv_1")
        if kind == "set":
            batch.set_state("Obj", "k", target, payload)
            self.state[target] = payload
        elif kind == "clear":
            batch.clear_state("Obj", "k", target)
            self.state.pop(target, None)
        elif kind == "clear_all":
            batch.delete_prefix("state", keys.object_prefix("Obj", "k"))
            self.state.clear()
        elif kind == "journal":
            journal = self.journals[target]
            batch.append_entry(record, len(journal), Run("step", value=payload) if journal else Input(payload))
            journal.append([payload])
        elif kind == "complete" and self.journals[target]:  # a call's entry, rewritten with its result
            journal = self.journals[target]
            batch.complete_entry(record, len(journal) - 1, Call("S", "h", input=payload, value=payload, done=True))
            journal[-1] = [payload, payload]
        elif kind == "purge":
            batch.delete_prefix("journal", keys.journal_prefix(target))
            self.journals[target] = []

    def counts(self) -> Counter[bytes]:
        live = list(self.state.values()) + [p for j in self.journals.values() for e in j for p in e]
        return Counter(hashlib.sha256(p).digest() for p in live if _large(p))


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(operations, min_size=1, max_size=6), min_size=1, max_size=6))
def test_counts_equal_the_live_references(tmp_path_factory, batches) -> None:
    store = Store(tmp_path_factory.mktemp("blobs"), durability="none", map_size=1 << 24, blob_threshold=THRESHOLD)
    model = Model()
    for spec in batches:
        batch = Changes()
        for operation in spec:
            model.apply(*operation, batch)
        store.write_now(batch)
    expected = model.counts()
    assert {sha: c.count for sha, c in store.blob_counts().items()} == dict(expected)
    with store._env.begin(db=store._dbs["blobs"]) as txn:  # the bytes are there exactly while referred to
        assert {bytes(k) for k in txn.cursor().iternext(keys=True, values=False)} == set(expected)
    assert store.read_state("Obj", "k") == model.state
    for invocation_id, journal in model.journals.items():
        assert [[getattr(e, f) for f in ("input", "value") if hasattr(e, f)] if type(e) is Call else [e.value]
                for e in store.read_journal(invocation_id)] == journal
    asyncio.run(store.close())


def test_the_same_bytes_are_stored_once_and_read_back(tmp_path) -> None:
    store = Store(tmp_path, durability="none", map_size=1 << 26)
    value = bytes(range(256)) * 8192  # 2 MiB
    batch = Changes()
    for index in range(10):
        batch.append_entry(_record("inv_1"), index, Run(f"step{index}", value=value))
    store.write_now(batch)
    [(sha, count)] = store.blob_counts().items()
    assert (sha, count.count, count.size) == (hashlib.sha256(value).digest(), 10, len(value))
    assert store.blob_bytes_stored() < len(value) // 10  # compressed, once
    assert all(e.value == value for e in store.read_journal("inv_1"))  # type: ignore[union-attr]
    assert store.read_blob(sha) == value and store.blob_preview(sha, 256) == value[:256]
    with store._env.begin(db=store._dbs["journal"]) as txn:  # what the journal holds: references
        assert all(len(raw) < 100 for raw in txn.cursor().iternext(keys=False, values=True))
    asyncio.run(store.close())


def test_a_payload_that_looks_like_a_reference_is_a_blob_of_its_own(tmp_path) -> None:
    store = Store(tmp_path, durability="none", map_size=1 << 24)
    forged = BlobRef(b"\x01" * 32, 5).encode()
    batch = Changes()
    batch.set_state("Obj", "k", "n", forged)
    store.write_now(batch)
    assert store.read_state("Obj", "k") == {"n": forged}
    assert list(store.blob_counts()) == [hashlib.sha256(forged).digest()]
    asyncio.run(store.close())



def test_a_layout_4_directory_gets_its_large_payloads_stored_as_blobs(tmp_path) -> None:
    """A directory written before blobs (layout 4): opening it stores what is over the threshold
    once, and every read gives back what was written."""
    import lmdb

    from sidecar.store.environment import DATABASES
    from sidecar.store.lmdb_store import encode_entry

    large, other = b"L" * (THRESHOLD * 4), b"M" * (THRESHOLD * 2)
    env = lmdb.open(str(tmp_path), max_dbs=len(DATABASES) + 1, map_size=1 << 24)
    dbs = {name: env.open_db(name.encode()) for name in DATABASES if name not in ("blobs", "blob_refs")}
    with env.begin(write=True) as txn:
        txn.put(b"format", b"4", db=dbs["meta"])
        for index, entry in enumerate([Input(large), Run("a", value=large), Run("b", value=b"1"), SetState("s", other)]):
            txn.put(keys.journal_key("inv_1", index), encode_entry(entry), db=dbs["journal"])
        txn.put(keys.state_key("Obj", "k", "s"), other, db=dbs["state"])
    env.close()

    store = Store(tmp_path, durability="none", map_size=1 << 24, blob_threshold=THRESHOLD)
    assert store._get("meta", b"format") == b"7"  # the recorded layout is this test's point
    counts = {sha: c.count for sha, c in store.blob_counts().items()}
    assert counts == {hashlib.sha256(large).digest(): 2, hashlib.sha256(other).digest(): 2}
    assert [getattr(e, "value") for e in store.read_journal("inv_1")] == [large, large, b"1", other]
    assert store.read_state("Obj", "k") == {"s": other}
    asyncio.run(store.close())
