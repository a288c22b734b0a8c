"""What cluster mode adds to a commit: a fenced append to a 3-replica JetStream stream against a
synced LMDB commit of the same size, in the same run.

    python -m benchmarks.cluster_append [--count 300] [--json out.json]

Starts 3 nats-servers on loopback (``sidecar.cluster.nats_servers``: file storage synced on every
write, as ``sidecar nats-config`` writes it) and appends ``--count`` records of 1 KiB and of
16 KiB, one at a time, each expecting the partition's previous sequence (the fence) and carrying
a message ID, as the sidecar's group commit does. The baseline: the same number of LMDB write
transactions of one put each, in a temp environment opened with ``sync=True``. The 3 servers
share this machine's disk and CPUs, so a real cluster (one server per machine) pays a network
round trip more and shares nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import msgspec

from benchmarks.loadgen import percentile
from benchmarks.procs import add_output_options, busy_warning, leave_tmp, machine_info, run_cli, write_json
from sidecar.cluster.nats_log import NatsChangelog, close, connect
from sidecar.cluster.nats_servers import NatsServers

SIZES = (1024, 16 * 1024)


class Row(msgspec.Struct):
    what: str
    size: int
    count: int
    p50_ms: float
    p99_ms: float


class Report(msgspec.Struct):
    machine: dict[str, object]
    rows: list[Row]


def _row(what: str, size: int, seconds: list[float]) -> Row:
    ordered = sorted(seconds)
    return Row(what, size, len(ordered), round(percentile(ordered, 50) * 1000, 3), round(percentile(ordered, 99) * 1000, 3))


def _lmdb_commits(path: Path, size: int, count: int) -> list[float]:
    """``count`` synced write transactions of one ``size``-byte put each."""
    env = lmdb.open(str(path), map_size=1 << 30, sync=True, metasync=True)
    try:
        times = []
        for i in range(count):
            value = os.urandom(size)
            started = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(i.to_bytes(8, "big"), value)
            times.append(time.perf_counter() - started)
        return times
    finally:
        env.close()


async def _appends(changelog: NatsChangelog, partition: int, size: int, count: int) -> list[float]:
    """``count`` fenced appends to ``partition``, one after the other."""
    expected = await changelog.last_sequence(partition)
    times = []
    for i in range(count):
        payload = os.urandom(size)
        started = time.perf_counter()
        expected = await changelog.append(partition, payload, expected=expected, message_id=f"bench-{partition}-{i}")
        times.append(time.perf_counter() - started)
    return times


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-append-"))
    machine = machine_info()
    rows = [_row("LMDB commit (sync)", size, _lmdb_commits(tmp / f"lmdb-{size}", size, args.count)) for size in SIZES]
    try:
        async with NatsServers(tmp / "nats", 3) as servers:
            client = await connect(servers.urls, "bench")
            try:
                changelog = await NatsChangelog.open(client)
                await _appends(changelog, 99, 1024, 20)  # warm-up: the stream's leader and file blocks
                for partition, size in enumerate(SIZES):
                    rows.append(_row("JetStream R3 append", size, await _appends(changelog, partition, size, args.count)))
            finally:
                await close(client)
        if warning := busy_warning(machine):
            print(warning, file=sys.stderr)
        print(f"{args.count} sequential commits each; machine: {machine['cores']} cores, {machine['cpu_model']}")
        print(f"{'':22} {'size':>7} {'p50 ms':>8} {'p99 ms':>8}")
        for row in sorted(rows, key=lambda r: (r.size, r.what)):
            print(f"{row.what:22} {row.size:7d} {row.p50_ms:8.2f} {row.p99_ms:8.2f}")
        write_json(args.json, Report(machine, rows))
        return 0
    finally:
        leave_tmp(tmp, args.keep)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster_append", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=300, help="commits measured per size and kind")
    add_output_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
