"""What the invocation list's indexes cost the writes, and what they save a list call.

    python -m benchmarks.listing [--invocations 20000] [--rounds 3] [--durability none] [--json out.json]

Writes: the batches of one invocation's life (its creation, a status change, a journal entry, its
end; a purge, as the retention sweep makes it), as ``Changes`` makes them, committed with
``environment.commit_group`` in groups of 32 the way the writer commits them, and, in alternating
rounds on fresh directories, the same batches with the index operations taken out: the writes as
they were before the indexes (the baseline). Durability ``none`` by default: an fsync per group
buries the CPU cost under the disk's (``--durability fsync`` shows by how much). Median
microseconds per batch over the rounds.

Reads: ``status=paused`` among ``--invocations`` finished ones and three paused, one page through
the index (``Store.list_invocations``) against the walk the list made before (every record
decoded, newest first, until ``limit`` matched), on the same directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from benchmarks.procs import machine_info, write_json
from handler_sdk.protocol import Output, Run
from sidecar.ids import IdGenerator
from sidecar.store import Changes, InvocationRecord, Store, WriteBatch
from sidecar.store.environment import commit_group, open_environment

_INDEXES = ("by_status", "by_target")
_GROUP = 32
_decoder = msgspec.msgpack.Decoder(InvocationRecord)


class Report(msgspec.Struct):
    machine: dict[str, object]
    invocations: int
    rounds: int
    durability: str
    batches_per_round: int
    write_us_per_batch_baseline: float
    write_us_per_batch_indexed: float
    write_overhead_pct: float
    list_ms_full_scan: float
    list_ms_indexed: float
    list_records_decoded_full_scan: int


def _record(ids: IdGenerator, n: int) -> InvocationRecord:
    return InvocationRecord(id=ids.invocation_id(n % 16), service="Counter", handler="add", key=f"k{n % 1000}",
                            handler_kind="exclusive", status="pending", deployment_id="dp_1", created_ms=1,
                            modified_ms=1, inbox_seq=n + 1)


def _lives(count: int) -> list[WriteBatch]:
    """The batches of ``count`` invocations' lives, in the order an invoker submits them."""
    ids = IdGenerator()
    batches: list[WriteBatch] = []
    for n in range(count):
        record = _record(ids, n)
        created = Changes()
        created.create(record, b"1", None)
        record.status, record.attempts = "backing-off", 1
        moved = Changes()
        moved.put_invocation(record)
        stepped = Changes()
        stepped.append_entry(record, 1, Run("step", value=b"2"))
        record.status, record.completed_ms, record.output = "completed", 2, b"2"
        ended = Changes()
        ended.append_entry(record, 2, Output(value=b"2"))
        ended.finish(record)
        purged = Changes()
        purged.purge(record, None)
        batches += [created, moved, stepped, ended, purged]
    return batches


def _without_indexes(batches: list[WriteBatch]) -> list[WriteBatch]:
    return [WriteBatch([op for op in b.ops if op.db not in _INDEXES]) for b in batches]


def _commit_us(batches: list[WriteBatch], durability: str) -> float:
    with tempfile.TemporaryDirectory(dir=".") as tmp:  # on the disk the sidecar would use, not a tmpfs
        env, dbs = open_environment(tmp, durability=durability, map_size=1 << 30)
        started = time.perf_counter()
        for start in range(0, len(batches), _GROUP):
            assert commit_group(env, dbs, batches[start:start + _GROUP]) == [None] * len(
                batches[start:start + _GROUP])
        elapsed = time.perf_counter() - started
        env.close()
    return elapsed / len(batches) * 1e6


def _full_scan(store: Store, status: str, limit: int) -> int:
    """The list before the indexes: every record decoded, newest first, until ``limit`` match."""
    decoded = matched = 0
    with store._env.begin(db=store._dbs["invocations"]) as txn:
        cursor = txn.cursor()
        if cursor.last():
            for _, raw in cursor.iterprev():
                decoded += 1
                if _decoder.decode(raw).status == status:
                    matched += 1
                    if matched >= limit:
                        break
    return decoded


def _best_ms(call: Callable[[], object], times: int = 5) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _reads(count: int) -> tuple[float, float, int]:
    """A store of ``count`` completed invocations, then three paused: list the paused ones."""
    ids = IdGenerator()
    changes = Changes()
    for n in range(count + 3):
        record = _record(ids, n)
        changes.create(record, b"1", None)
        if n < count:
            record.status, record.completed_ms = "completed", 2
            changes.finish(record)
        else:
            record.status = "paused"
            changes.put_invocation(record)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), durability="none", map_size=1 << 30)
        store.write_now(changes)
        decoded = _full_scan(store, "paused", 100)
        full = _best_ms(lambda: _full_scan(store, "paused", 100))
        indexed = _best_ms(lambda: store.list_invocations(status="paused", limit=100))
        assert len(store.list_invocations(status="paused", limit=100).records) == 3
        store.close_environment()
    return full, indexed, decoded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--invocations", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--durability", choices=("none", "fsync"), default="none")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    args = p.parse_args(argv)
    indexed = _lives(args.invocations)
    baseline = _without_indexes(indexed)
    base_us, indexed_us = [], []
    for _ in range(args.rounds):
        base_us.append(_commit_us(baseline, args.durability))
        indexed_us.append(_commit_us(indexed, args.durability))
    full_ms, indexed_ms, decoded = _reads(args.invocations)
    base, with_index = statistics.median(base_us), statistics.median(indexed_us)
    report = Report(machine_info(), args.invocations, args.rounds, args.durability, len(indexed), round(base, 2),
                    round(with_index, 2), round((with_index / base - 1) * 100, 1), round(full_ms, 2),
                    round(indexed_ms, 3), decoded)
    print(f"writes: {base:.2f} us per batch before the indexes, {with_index:.2f} with them "
          f"({report.write_overhead_pct:+.1f} %), {len(indexed)} batches in groups of {_GROUP}, "
          f"durability {args.durability}, median of {args.rounds} rounds")
    print(f"list status=paused among {args.invocations} finished: {full_ms:.2f} ms scanning every record "
          f"({decoded} decoded), {indexed_ms:.3f} ms through the index")
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
