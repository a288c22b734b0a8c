"""``python -m sidecar.cluster.dev``: a whole cluster on this machine, to try cluster mode.

Three nats-servers (``NatsServers``, configured as ``sidecar nats-config`` would), ``--nodes``
sidecar nodes on loopback, and the counter example's handler service (or the one ``--register``
names), until Ctrl-C or SIGTERM, which stops them all: the nodes first, then the handler service,
then the nats-servers. ``make cluster`` runs it. Ports are fixed by default (node ``i``'s ingress
``8080 + i``, admin ``9070 + i``; the handler service 9080), so that the printed commands work as
they are; ``--free-ports`` picks free ones instead (as the test does).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import click

from handler_sdk.testing._ports import free_port

from .nats_servers import NatsServerMissing, NatsServers

#: How long a process may take to serve: generous for a loaded machine.
START_TIMEOUT_S = 60.0
#: The example the README's ``make run`` serves, served here unless ``--register`` says otherwise.
EXAMPLE = "examples.counter:counter"


class DevFailure(click.ClickException):
    """A process of the dev cluster would not start: the message says which, with its log."""


class _Child:
    """One process of the dev cluster, its output in ``base_dir/NAME.log``."""

    def __init__(self, name: str, args: list[str], base_dir: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = base_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # Its own process group: a Ctrl-C in the terminal reaches this script alone, which
            # stops the children in order.
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or not self.running:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def failure(self, what: str) -> DevFailure:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        tail = "\n".join(text.splitlines()[-20:])
        return DevFailure(f"{self.name} {what} (log {self.log_path}):\n{tail}")


class _Node:
    def __init__(self, number: int, base_dir: Path, nats: list[str], register: str, free_ports: bool) -> None:
        self.name = f"node-{number}"
        self.ingress = f"127.0.0.1:{free_port() if free_ports else 8080 + number - 1}"
        self.admin = f"127.0.0.1:{free_port() if free_ports else 9070 + number - 1}"
        self.child = _Child(self.name, [
            sys.executable, "-m", "sidecar", "serve", "--cluster", ",".join(nats), "--node", self.name,
            "--data-dir", str(base_dir / self.name), "--ingress", self.ingress, "--admin", self.admin,
            "--register", register], base_dir)


class DevCluster:
    """The dev cluster's processes under ``base_dir``: started together, stopped together."""

    def __init__(self, base_dir: Path, *, nodes: int, register: str | None, free_ports: bool,
                 temporary: bool = False) -> None:
        self.base_dir = base_dir
        self.temporary = temporary
        self.nats = NatsServers(base_dir / "nats", 3)
        self.handler: _Child | None = None
        if register is None:
            port = free_port() if free_ports else 9080
            register = f"http://127.0.0.1:{port}"
            self.handler = _Child("handlers", [sys.executable, "-m", "handler_sdk", EXAMPLE, "--port", str(port)],
                                  base_dir)
        self.register = register
        self.nodes = [_Node(i + 1, base_dir, self.nats.urls, register, free_ports) for i in range(nodes)]

    async def start(self) -> None:
        await self.nats.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http:
            if self.handler is not None:
                self.handler.start()
                await _until(http, self.handler, f"{self.register}/discover", "to serve")
            for node in self.nodes:
                node.child.start()
            for node in self.nodes:
                await _until(http, node.child, f"http://{node.admin}/health", "to serve as a node")

    def stop(self) -> None:
        for node in self.nodes:
            node.child.stop()
        if self.handler is not None:
            self.handler.stop()
        self.nats.stop()

    def describe(self) -> str:
        first, second = self.nodes[0], self.nodes[min(1, len(self.nodes) - 1)]
        kept = " (removed at stop: --base-dir keeps them)" if self.temporary else ""
        lines = [f"cluster of {len(self.nodes)} nodes on 3 nats-servers; logs and data in {self.base_dir}{kept}"]
        for node in self.nodes:
            pid = node.child.process.pid if node.child.process is not None else "?"
            lines.append(f"  {node.name}  ingress http://{node.ingress}  admin http://{node.admin}  pid {pid}")
        lines += [
            f"  nats    {','.join(self.nats.urls)}",
            f"  handler service {self.register}" + ("" if self.handler is None else f" ({EXAMPLE})"),
            "ready",
            f"try:  curl -s {first.ingress}/Counter/alice/add -H 'content-type: application/json' -d 5",
            f"      curl -s -X POST {second.ingress}/Counter/alice/get    (another node: the same key)",
            f"      curl -s {first.admin}/cluster    (who serves which partition; or: sidecar --admin "
            f"{first.admin} cluster)",
            "      kill -9 PID of a node, then call alice again through another: its partitions move",
            "stop: Ctrl-C",
        ]
        return "\n".join(lines)


async def _until(http: aiohttp.ClientSession, child: _Child, url: str, what: str) -> None:
    """Wait until ``url`` answers 200; fail with ``child``'s log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if not child.running:
            raise child.failure("exited at start")
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise child.failure(f"did not answer {url} within {START_TIMEOUT_S:g} s")
        await asyncio.sleep(0.1)


async def _run(cluster: DevCluster) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.start()
        click.echo(cluster.describe())
        await stop.wait()
    finally:
        cluster.stop()


@click.command()
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="How many sidecar nodes.")
@click.option("--base-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the nats-servers' stores, the nodes' data and every log go, kept after a stop "
                   "[a new temporary directory, removed after a stop].")
@click.option("--register", metavar="URI",
              help=f"The handler service every node registers [{EXAMPLE}, started here on port 9080].")
@click.option("--free-ports", is_flag=True,
              help="Free ports instead of 8080+i (ingress), 9070+i (admin) and 9080 (handler service).")
def main(nodes: int, base_dir: Path | None, register: str | None, free_ports: bool) -> None:
    """A cluster on this machine until Ctrl-C: nats-servers, nodes and a handler service."""
    if register is None and importlib.util.find_spec(EXAMPLE.split(":")[0]) is None:
        raise click.UsageError(f"the example handler service ({EXAMPLE}) is not importable from "
                               f"{os.getcwd()}: run this from the repository's root, or give --register URI")
    temporary = base_dir is None
    directory = Path(tempfile.mkdtemp(prefix="sidecar-cluster-")) if base_dir is None else base_dir
    directory.mkdir(parents=True, exist_ok=True)
    try:
        cluster = DevCluster(directory, nodes=nodes, register=register, free_ports=free_ports, temporary=temporary)
        asyncio.run(_run(cluster))
    except (NatsServerMissing, RuntimeError) as exc:  # no nats-server, or one that would not start
        raise click.ClickException(str(exc)) from None
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
