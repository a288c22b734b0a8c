"""Instructions per request, counted by callgrind: CPU work that other load on the machine does not move.

    python -m benchmarks.instructions [--scenarios counter,steps] [--requests 800] [--json out.json]

A throughput run (``benchmarks.run``) on a small machine shared with anything else moves by
several percent from one round to the next; the instructions a request costs do not (two runs of
the same tree agree within about 1 %, whatever else the machine is doing). This starts the
benchmark handler service and a sidecar (``--durability none``, one worker, a 1 GiB map: valgrind
cannot reserve the default 64 GiB) under ``valgrind --tool=callgrind --instr-atstart=no
--trace-children=yes``, sends 200 warm-up requests of each scenario, then per scenario switches
instrumentation on (``callgrind_control -i on``), zeroes the counts, sends ``--requests`` more, 8
at a time, and dumps the counts (``callgrind_control -d``). It prints the thousands of instructions
each process spent per request: the sidecar, its writer process and the handler service.

What the kernel does for their system calls is not counted: a change that saves system calls
(fewer socket writes) shows in ``benchmarks.run``, not here. ``callgrind_control`` speaks to every
callgrind process of this user: run nothing else under callgrind meanwhile. To compare two commits,
run it from each tree's own directory (docs/benchmarks.md, "Comparing two commits").
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import msgspec

from benchmarks.procs import BenchError, Procs, add_output_options, free_port, http_ok, leave_tmp, machine_info, \
    run_cli, sidecar_executable, wait_until, write_json
from benchmarks.run import SCENARIOS

_WARMUP = 200
#: Requests that only wake the processes, so that each takes the command just sent.
_WAKE = 20
_CONCURRENCY = 8
_KEYS = 1000
_MAP_SIZE = 1 << 30
#: callgrind runs Python about 30 times slower: starting takes a while.
_START_TIMEOUT_S = 300.0


class Count(msgspec.Struct):
    scenario: str
    process: str  # "sidecar", "writer" or "handlers"
    requests: int
    instructions_per_request: int


class Report(msgspec.Struct):
    command: str
    machine: dict[str, object]
    counts: list[Count]


def _callgrind(out_dir: Path, name: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
            f"--callgrind-out-file={out_dir}/{name}.%p"]


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)


async def _drive(session: aiohttp.ClientSession, base: str, scenario: str, count: int) -> None:
    spec = SCENARIOS[scenario]
    keys = spec.keys or _KEYS
    body = str(spec.n).encode()
    todo = iter(range(count))

    async def client() -> None:
        for i in todo:
            url = base + spec.path.format(key=f"k{i % keys}")
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise BenchError(f"{scenario}: {url} answered {resp.status}")

    await asyncio.gather(*(client() for _ in range(_CONCURRENCY)))


def _process_of(dump: str) -> str:
    command = re.search(r"^cmd: (.*)$", dump, re.M)
    line = command.group(1) if command else ""
    if "handler_sdk" in line:
        return "handlers"
    return "writer" if "sidecar.store.writer" in line else "sidecar"


def _collect(out_dir: Path, scenario: str, requests: int) -> list[Count]:
    """Sum the dumps callgrind just wrote (``NAME.PID.N``), per process, and remove them."""
    totals: dict[str, int] = {}
    for path in out_dir.glob("*.*.*"):
        dump = path.read_text(errors="replace")
        found = re.search(r"^(?:summary|totals): (\d+)", dump, re.M)
        if found:
            process = _process_of(dump)
            totals[process] = totals.get(process, 0) + int(found.group(1))
        path.unlink()
    return [Count(scenario, process, requests, round(total / requests)) for process, total in sorted(totals.items())]


async def _amain(args: argparse.Namespace, argv: list[str]) -> int:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise BenchError("valgrind is not installed (apt-get install valgrind)")
    scenarios = [name for name in args.scenarios.split(",") if name]
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise BenchError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-instructions-"))
    out_dir = tmp / "callgrind"
    out_dir.mkdir()
    procs = Procs(tmp)
    procs.env["SIDECAR_MAP_SIZE_BYTES"] = str(_MAP_SIZE)
    handler_port, ingress, admin = free_port(), free_port(), free_port()
    counts: list[Count] = []
    try:
        async with aiohttp.ClientSession() as session:
            procs.start("handlers", [*_callgrind(out_dir, "handlers"), sys.executable, "-m", "handler_sdk",
                                     "benchmarks.scenarios:ALL", "--port", str(handler_port)])
            await wait_until("the handler service", http_ok(session, f"http://127.0.0.1:{handler_port}/discover"),
                             procs, timeout=_START_TIMEOUT_S)
            procs.start("sidecar", [*_callgrind(out_dir, "sidecar"), *sidecar_executable(), "serve",
                                    "--data-dir", str(tmp / "data"), "--ingress", f"127.0.0.1:{ingress}",
                                    "--admin", f"127.0.0.1:{admin}", "--register", f"http://127.0.0.1:{handler_port}",
                                    "--durability", "none", "--workers", "1"])
            await wait_until("the sidecar, with the handler service registered",  # /health answers before that
                             http_ok(session, f"http://127.0.0.1:{admin}/services/Steps"), procs,
                             timeout=_START_TIMEOUT_S)
            base = f"http://127.0.0.1:{ingress}"
            for scenario in scenarios:
                await _drive(session, base, scenario, _WARMUP)
            # A process takes a command the next time it runs: a few requests wake them all.
            _control("-i", "on")
            await _drive(session, base, scenarios[0], _WAKE)
            for scenario in scenarios:
                _control("-z")  # taken as each process wakes for the first counted request
                await _drive(session, base, scenario, args.requests)
                _control("-d")
                await _drive(session, base, scenario, _WAKE)  # the dumps are written as they wake
                await asyncio.sleep(1)
                counts += _collect(out_dir, scenario, args.requests)
    finally:
        procs.close()
    print(f"{'scenario':<10} {'process':<10} {'k instructions / request':>26}")
    for count in counts:
        print(f"{count.scenario:<10} {count.process:<10} {count.instructions_per_request / 1000:>26,.0f}")
    for scenario in scenarios:
        total = sum(c.instructions_per_request for c in counts if c.scenario == scenario)
        print(f"{scenario:<10} {'all':<10} {total / 1000:>26,.0f}")
    write_json(args.json, Report(command="python -m benchmarks.instructions " + " ".join(argv),
                                 machine=machine_info(), counts=counts))
    leave_tmp(tmp, args.keep)
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenarios", default="counter,steps", help="of benchmarks.run's: counter, hotkey, steps")
    parser.add_argument("--requests", type=int, default=800, help="counted requests per scenario")
    add_output_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(_amain, _parse, argv)


if __name__ == "__main__":
    sys.exit(main())
