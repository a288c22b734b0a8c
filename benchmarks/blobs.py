"""Replays of a journal of large entries: bytes sent to the handler and time per resume, with the
handler's blob cache and without it, in the same run.

    python -m benchmarks.blobs [--entries 40] [--size 262144] [--resumes 20] [--rounds 3] [--json out.json]

One sidecar (durability ``none``, one worker) and two handler processes serving the same code
under two names: ``Cached`` (the SDK's default cache) and ``Uncached`` (``--blob-cache-bytes 0``),
each behind a TCP relay that counts the bytes the sidecar sends it. A handler journals
``--entries`` steps of ``--size`` bytes each (random text: no two alike), then sleeps 1 ms
``--resumes`` times; it suspends at each sleep (``--suspend-after 0``), so each wake-up is a new
attempt whose ``Start`` carries the whole journal. The same invocation is also run with no
resumes; the difference, divided by ``--resumes``, is what one resume costs: its bytes on the
wire and its time. The cached handler gets references (48 bytes an entry) for blobs it holds;
the uncached one asks for every blob again at each resume (``FetchBlobs``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.procs import Procs, add_output_options, free_port, http_ok, leave_tmp, machine_info, run_cli, sidecar_executable, \
    wait_until, write_json
from handler_sdk import Context, Service


class Spec(msgspec.Struct):
    entries: int
    size: int
    resumes: int


def _text(index: int, size: int) -> str:
    return base64.b64encode(random.Random(index).randbytes(size * 3 // 4 + 3)).decode()[:size]


def _replays(name: str) -> Service:
    service = Service(name)

    @service.handler()
    async def run(ctx: Context, spec: Spec) -> int:
        for index in range(spec.entries):
            await ctx.run(f"entry{index}", _text, index, spec.size)
        for _ in range(spec.resumes):
            await ctx.sleep(0.001)
        return spec.entries

    return service


CACHED = _replays("Cached")
UNCACHED = _replays("Uncached")


class Relay:
    """A TCP relay to a handler process that counts the bytes the sidecar sends through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.to_handler = 0
        self.port = free_port()
        self.connections: set[asyncio.Task[object]] = set()

    async def start(self) -> asyncio.Server:
        return await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._pipe(reader, up_writer, count=True), self._pipe(up_reader, writer, count=False),
                             return_exceptions=True)  # a side that resets ends its pipe: nothing to report

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool) -> None:
        try:
            while chunk := await reader.read(1 << 20):
                if count:
                    self.to_handler += len(chunk)
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()


class Result(msgspec.Struct):
    handler: str
    bytes_per_resume: int
    ms_per_resume: float
    rounds_ms: list[float]


class Report(msgspec.Struct):
    machine: dict[str, object]
    entries: int
    size: int
    resumes: int
    results: list[Result]
    #: Bytes per resume without the cache over bytes per resume with it.
    bytes_ratio: float


async def _timed(session: aiohttp.ClientSession, url: str, spec: Spec) -> float:
    started = time.perf_counter()
    async with session.post(url, data=msgspec.json.encode(spec), headers={"content-type": "application/json"}) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {body[:200]!r}")
    return time.perf_counter() - started


async def _measure(session: aiohttp.ClientSession, ingress: str, name: str, relay: Relay, args: argparse.Namespace) \
        -> Result:
    url = f"{ingress}/{name}/run"
    flat, resumed = Spec(args.entries, args.size, 0), Spec(args.entries, args.size, args.resumes)
    per_resume_ms, per_resume_bytes = [], []
    for _ in range(args.rounds):
        before = relay.to_handler
        base_s = await _timed(session, url, flat)
        middle = relay.to_handler
        resumed_s = await _timed(session, url, resumed)
        per_resume_bytes.append(((relay.to_handler - middle) - (middle - before)) / args.resumes)
        per_resume_ms.append((resumed_s - base_s) * 1000 / args.resumes)
    return Result(name, int(statistics.median(per_resume_bytes)), round(statistics.median(per_resume_ms), 2),
                  [round(ms, 2) for ms in per_resume_ms])


async def amain(args: argparse.Namespace, argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-blobs-"))
    procs = Procs(tmp)
    servers: list[asyncio.Server] = []
    relays: dict[str, Relay] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            for name, extra in (("Cached", []), ("Uncached", ["--blob-cache-bytes", "0"])):
                port = free_port()
                procs.start(name, [sys.executable, "-m", "handler_sdk", f"benchmarks.blobs:{name.upper()}",
                                   "--port", str(port), "--suspend-after", "0", *extra])
                await wait_until(f"{name} /discover", http_ok(session, f"http://127.0.0.1:{port}/discover"), procs)
                relays[name] = Relay(port)
                servers.append(await relays[name].start())
            ingress_port, admin_port = free_port(), free_port()
            procs.start("sidecar", [
                *sidecar_executable(), "serve", "--data-dir", str(tmp / "data"), "--ingress",
                f"127.0.0.1:{ingress_port}", "--admin", f"127.0.0.1:{admin_port}", "--durability", "none",
                "--workers", "1",
                *[arg for relay in relays.values() for arg in ("--register", f"http://127.0.0.1:{relay.port}")],
            ])
            admin = f"http://127.0.0.1:{admin_port}"
            await wait_until("both services registered", http_ok(session, f"{admin}/services/Uncached"), procs)
            print(f"{args.entries} entries of {args.size} bytes, {args.resumes} resumes, {args.rounds} rounds")
            ingress = f"http://127.0.0.1:{ingress_port}"
            results = [await _measure(session, ingress, name, relay, args) for name, relay in relays.items()]
            procs.check_alive()
        cached, uncached = results
        report = Report(machine_info(), args.entries, args.size, args.resumes, results,
                        round(uncached.bytes_per_resume / max(1, cached.bytes_per_resume), 1))
        print(f"{'handler':10} {'bytes/resume':>14} {'ms/resume':>10}")
        for result in results:
            print(f"{result.handler:10} {result.bytes_per_resume:14d} {result.ms_per_resume:10.2f}")
        print(f"the cache sends {report.bytes_ratio}x fewer bytes per resume")
        write_json(args.json, report)
        return 0
    finally:
        procs.close()  # first: the relays' connections end as their processes go
        for server in servers:
            server.close()
        open_connections = [task for relay in relays.values() for task in relay.connections]
        if open_connections:
            await asyncio.wait(open_connections, timeout=5)
        leave_tmp(tmp, args.keep)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.blobs", description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=40, help="large steps in the journal")
    p.add_argument("--size", type=int, default=256 * 1024, help="bytes of each step's value")
    p.add_argument("--resumes", type=int, default=20, help="replays measured per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (the median is reported)")
    add_output_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(amain, parse_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
