"""Readiness means ready: once ``/health`` answers, every worker's ingress takes requests."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_handler_processes import _listeners
from tests.procs import Process, free_port, sidecar_cli

STARTS = 2


def _child(parent: int, needle: str) -> int | None:
    """The PID of ``parent``'s child whose command line contains ``needle``, if there is one yet."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and needle in cmdline:
            return int(entry.name)
    return None


async def _first_health(http: aiohttp.ClientSession, admin: str, sidecar: Process) -> None:
    """Return as soon as ``/health`` answers 200, polling as fast as a client could."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert sidecar.running, sidecar.log()
        try:
            async with http.get(f"http://{admin}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
    raise AssertionError(f"/health never answered:\n{sidecar.log()}")


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_health_answers_only_once_every_ingress_listens(
    tmp_path: Path, http: aiohttp.ClientSession, workers: int,
) -> None:
    for start in range(STARTS):
        ingress, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        sidecar = Process(f"sidecar-{start}", sidecar_cli(
            "serve", "--data-dir", str(tmp_path / "data"), "--ingress", ingress, "--admin", admin,
            "--durability", "none", "--workers", str(workers)), tmp_path).start()
        try:
            await _first_health(http, admin, sidecar)
            listening = _listeners(int(ingress.rsplit(":", 1)[1]))
            # No retry: a client that saw the sidecar healthy is served at once.
            async with http.post(f"http://{ingress}/NoSuchService/handler", data=b"{}") as response:
                assert response.status == 404
            assert listening == workers, f"start {start}: {listening} of {workers} ingress sockets listen"
        finally:
            assert sidecar.stop() == 0, sidecar.log()


@pytest.mark.parametrize(("workers", "part"), [
    (2, "sidecar.process.worker --index 1"), (1, "sidecar.store.writer"), (2, "sidecar.store.writer"),
], ids=["2-workers-second-worker", "1-worker-writer", "2-workers-writer"])
async def test_health_waits_for_a_part_that_is_still_starting(
    tmp_path: Path, http: aiohttp.ClientSession, workers: int, part: str,
) -> None:
    """A part held back (SIGSTOP) as it starts keeps ``/health`` unanswered until it is let go."""
    ingress, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    sidecar = Process("sidecar", sidecar_cli(
        "serve", "--data-dir", str(tmp_path / "data"), "--ingress", ingress, "--admin", admin,
        "--durability", "none", "--workers", str(workers)), tmp_path).start()
    assert sidecar.proc is not None
    held: int | None = None
    try:
        deadline = time.monotonic() + 10
        while (held := _child(sidecar.proc.pid, part)) is None:
            assert time.monotonic() < deadline and sidecar.running, f"no {part} started:\n{sidecar.log()}"
        os.kill(held, signal.SIGSTOP)  # Python is still importing: long before it could serve
        with pytest.raises(asyncio.TimeoutError):  # an observation window: nothing may answer in it
            await asyncio.wait_for(_first_health(http, admin, sidecar), 2.0)
        os.kill(held, signal.SIGCONT)
        held = None
        await _first_health(http, admin, sidecar)
        async with http.post(f"http://{ingress}/NoSuchService/handler", data=b"{}") as response:
            assert response.status == 404
        assert _listeners(int(ingress.rsplit(":", 1)[1])) == workers
    finally:
        if held is not None:
            os.kill(held, signal.SIGCONT)
        assert sidecar.stop() == 0, sidecar.log()
