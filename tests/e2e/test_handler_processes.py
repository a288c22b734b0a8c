"""A handler service spread over several processes on one port (``--reuse-port``)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import running_cluster
from tests.procs import ROOT, Process, eventually, python


def _listeners(port: int) -> int:
    """How many sockets listen on ``port`` on loopback (Linux: /proc/net/tcp, state 0A)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


async def test_two_handler_processes_share_a_port_and_one_can_die(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    flags = ["--durability", "none", "--inactivity-timeout", "3", "--workers", "1"]
    async with running_cluster(tmp_path, http, request, flags, handler_flags=("--reuse-port",)) as cluster:
        second = Process("handlers-2", cluster.handlers.args, tmp_path, {"SINK_URL": cluster.sink_url}).start()
        try:
            async def both_listen() -> bool:
                assert second.running, f"the second process exited:\n{second.log()}"
                return _listeners(cluster.handler_port) == 2

            await eventually(both_listen, what="two processes listening on the handler port")
            for _ in range(10):
                assert (await cluster.post("/Counter/shared-port/add", 1))[0] == 200
            cluster.handlers.kill()  # the first process: whatever links it held are cut
            for _ in range(10):
                status, body, _ = await cluster.post("/Counter/shared-port/add", 1)
                assert status == 200, body
            status, total, _ = await cluster.post("/Counter/shared-port/get")
            assert (status, total) == (200, 20)
        finally:
            second.stop()


def test_a_taken_port_is_refused_with_a_message_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(python("-m", "handler_sdk", "examples.counter:counter", "--port", str(port)),
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--reuse-port" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("in_flight", [None, "long_step", "blocking_step", "request-response"])
async def test_a_handler_service_exits_promptly_on_sigterm(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, in_flight: str | None,
) -> None:
    """Whatever runs when SIGTERM comes (nothing, an async step, a sync step in a thread, a
    request-response attempt), the service exits at once; the sidecar retries what was cut off."""
    flags = ["--durability", "none", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        if in_flight == "request-response":
            registered = await cluster.cli("register", "--force", "--request-response",
                                           f"http://127.0.0.1:{cluster.handler_port}")
            assert registered.returncode == 0, registered.stderr
        for key in range(4):  # links from both workers are open now
            assert (await cluster.post(f"/Counter/bye-{key}/add", 1))[0] == 200
        if in_flight is not None:
            handler = "long_step" if in_flight == "request-response" else in_flight
            status, sent, _ = await cluster.post(f"/Steps/{handler}/send", 60)
            assert status == 202, sent

            async def running() -> bool:
                status, shown = await cluster.get(f"/invocations/{sent['invocationId']}", admin=True)
                return status == 200 and shown["status"] == "running" and shown["attempts"] >= 1

            await eventually(running, what=f"the {handler} to be running")
        proc = cluster.handlers.proc
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        async def exited() -> bool:
            return proc.poll() is not None

        await eventually(exited, timeout=1.5, what="the handler service to exit after SIGTERM")
        took = time.monotonic() - started
        assert proc.returncode == 0, cluster.handlers.log()
        assert took < 1.0, f"the handler service took {took:.2f} s to exit"
