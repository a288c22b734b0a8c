"""Steady load with a short retention: the data file must level off once the sweep keeps pace.

    python -m benchmarks.retention [--retention 5] [--duration 60] [--sample 5] [--json out.json]

Starts the benchmark handler service and a sidecar with ``--retention`` seconds, drives
``Counter.add`` (and ``Steps.run``, which journals three steps each) with a closed loop for
``--duration`` seconds, and prints, every ``--sample`` seconds, the size of ``data.mdb`` and how
many finished invocations the store still holds (``GET /invocations?status=completed``, counted a
page at a time). Once the first invocations pass their retention the sweep frees as many pages as
the load fills, LMDB reuses them, and the file stops growing: the last samples' growth is printed
against the first's. Durability ``none``: the disk's fsync rate is not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.loadgen import run_load
from benchmarks.procs import Procs, add_output_options, free_port, http_ok, leave_tmp, machine_info, run_cli, sidecar_executable, \
    wait_until, write_json


class Sample(msgspec.Struct):
    elapsed_s: float
    data_mdb_bytes: int
    completed_kept: int


class Report(msgspec.Struct):
    machine: dict[str, object]
    retention_s: float
    duration_s: float
    requests: int
    samples: list[Sample]
    #: File growth over the last quarter of the run against the first quarter's.
    late_growth_ratio: float | None


async def _kept(session: aiohttp.ClientSession, admin: str) -> int:
    """Finished invocations still stored, counted through the list's pages."""
    count, cursor = 0, None
    while True:
        query = {"status": "completed", "limit": "1000", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{admin}/invocations", params=query) as resp:
            page = await resp.json()
        count += len(page["invocations"])
        cursor = page.get("next_cursor")
        if not cursor:
            return count


async def _sample(session: aiohttp.ClientSession, admin: str, data: Path, started: float, every: float,
                  until: float, samples: list[Sample]) -> None:
    while (now := time.monotonic()) < until:
        size = (data / "data.mdb").stat().st_size
        samples.append(Sample(round(now - started, 1), size, await _kept(session, admin)))
        print(f"  {samples[-1].elapsed_s:6.1f} s  data.mdb {size / 2**20:8.2f} MiB  "
              f"completed kept {samples[-1].completed_kept:7d}", flush=True)
        await asyncio.sleep(every)


def _late_growth(samples: list[Sample]) -> float | None:
    quarter = len(samples) // 4
    if quarter < 1:
        return None
    early = samples[quarter].data_mdb_bytes - samples[0].data_mdb_bytes
    late = samples[-1].data_mdb_bytes - samples[-1 - quarter].data_mdb_bytes
    return round(late / early, 3) if early > 0 else None


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    procs = Procs(tmp)
    try:
        handler_port, ingress, admin_port = free_port(), free_port(), free_port()
        handler_url = f"http://127.0.0.1:{handler_port}"
        data = tmp / "data"
        async with aiohttp.ClientSession() as session:
            procs.start("handlers", [sys.executable, "-m", "handler_sdk", "benchmarks.scenarios:ALL",
                                     "--port", str(handler_port)])
            await wait_until("handler service /discover", http_ok(session, f"{handler_url}/discover"), procs)
            procs.start("sidecar", [
                *sidecar_executable(), "serve", "--data-dir", str(data), "--ingress", f"127.0.0.1:{ingress}",
                "--admin", f"127.0.0.1:{admin_port}", "--register", handler_url, "--durability", "none",
                "--workers", "1", "--retention", str(args.retention),
            ])
            admin = f"http://127.0.0.1:{admin_port}"
            await wait_until("Counter and Steps registered",
                             http_ok(session, f"http://127.0.0.1:{ingress}/Counter/k0/get", method="POST"), procs)
            base = f"http://127.0.0.1:{ingress}"
            print(f"retention {args.retention:g} s, {args.duration:g} s of load, a sample every {args.sample:g} s")
            started = time.monotonic()
            samples: list[Sample] = []
            sampler = asyncio.ensure_future(
                _sample(session, admin, data, started, args.sample, started + args.duration, samples))
            counter, steps = await asyncio.gather(
                run_load(f"{base}/Counter/{{key}}/add", body=b"1", concurrency=24, duration=args.duration,
                         warmup=0),
                run_load(f"{base}/Steps/run", body=b"7", concurrency=8, keys=1, duration=args.duration, warmup=0),
            )
            await sampler
            procs.check_alive()
        report = Report(machine_info(), args.retention, args.duration, counter.requests + steps.requests,
                        samples, _late_growth(samples))
        print(f"{report.requests} requests; data.mdb grew {report.late_growth_ratio}x as much in the last "
              "quarter of the run as in the first")
        write_json(args.json, report)
        return 0
    finally:
        procs.close()
        leave_tmp(tmp, args.keep)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.retention", description=__doc__.split("\n")[0])
    p.add_argument("--retention", type=float, default=5.0, help="the sidecar's --retention, seconds")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    add_output_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
