"""Cluster nodes as real processes: a handler service and ``sidecar serve --cluster`` nodes, each
with its own data directory, on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.procs import Process, eventually, free_port, python, sidecar_cli

START_TIMEOUT_S = 60.0


class Node:
    def __init__(self, name: str, tmp: Path, nats: list[str], handler_url: str, env: dict[str, str]) -> None:
        self.name = name
        self.data_dir = tmp / f"data-{name}"
        self.ingress = f"127.0.0.1:{free_port()}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.mesh = f"127.0.0.1:{free_port()}"
        self.process = Process(name, sidecar_cli(
            "serve", "--cluster", ",".join(nats), "--node", name, "--data-dir", str(self.data_dir),
            "--ingress", self.ingress, "--admin", self.admin, "--mesh", self.mesh,
            "--register", handler_url), tmp, env)
        #: When this node was last SIGKILLed (monotonic), for failover timings.
        self.killed_at: float | None = None

    def kill(self) -> None:
        self.killed_at = time.monotonic()
        self.process.kill()


class Nodes:
    """``count`` nodes and one handler service (``handlers``: MODULE:OBJECT)."""

    def __init__(self, tmp: Path, http: aiohttp.ClientSession, nats: list[str], *, count: int = 3,
                 handlers: str = "examples.counter:counter", env: dict[str, str] | None = None) -> None:
        self.http = http
        self.handler_port = free_port()
        self.handlers = Process("handlers", python("-m", "handler_sdk", handlers, "--port", str(self.handler_port)),
                                tmp, env)
        url = f"http://127.0.0.1:{self.handler_port}"
        self.nodes = [Node(f"node-{i + 1}", tmp, nats, url, env or {}) for i in range(count)]

    async def start(self) -> None:
        self.handlers.start()
        for node in self.nodes:
            node.process.start()
        for node in self.nodes:
            await self.until_serving(node)

    async def until_serving(self, node: Node) -> None:
        async def registered() -> bool:
            assert node.process.running, f"{node.name} exited: {node.process.log_path.read_text()[-3000:]}"
            async with self.http.get(f"http://{node.admin}/services") as response:
                return response.status == 200 and bool((await response.json()).get("services"))
        await eventually(registered, timeout=START_TIMEOUT_S, what=f"{node.name} to serve")

    async def view(self, node: Node) -> dict[str, Any]:
        async with self.http.get(f"http://{node.admin}/cluster") as response:
            assert response.status == 200, await response.text()
            view: dict[str, Any] = await response.json()
            return view

    async def call(self, node: Node, path: str, body: Any, headers: dict[str, str] | None = None,
                   ) -> tuple[int, Any]:
        async with self.http.post(f"http://{node.ingress}/{path}", json=body, headers=headers or {}) as response:
            text = await response.text()
            return response.status, (await response.json() if text and response.content_type == "application/json"
                                     else text)

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop()
        self.handlers.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_path.read_text(errors='replace')[-6000:]}"
                         for p in [self.handlers, *(n.process for n in self.nodes)] if p.log_path.exists())
