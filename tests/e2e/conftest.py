"""A running sidecar, handler service and side-effect sink for each end-to-end test."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp
import msgspec
import pytest

from tests.procs import Process, eventually, free_port, python, sidecar_cli

#: A user's project with tests of its own, run by pytest in a subprocess (test_testing_harness.py),
#: never collected as part of this suite.
collect_ignore = ["harness_user"]

#: How long a process may take to start serving: generous, since a busy machine (two test runs
#: at once on two cores) slows a start several times over, and nothing waits longer than needed.
START_TIMEOUT_S = 60.0


class Cluster:
    """The processes of one test and HTTP helpers to talk to them."""

    def __init__(
        self, tmp: Path, http: aiohttp.ClientSession, *, handlers: str, sidecar_flags: list[str],
        sink: str = "tests.e2e.sink", sink_env: str = "SINK_URL", sink_ready: str = "/counts",
        handler_flags: tuple[str, ...] = (), handler_module: str = "handler_sdk", admin_token: str | None = None,
        handler_env: dict[str, str] | None = None, sink_port: int | None = None,
    ) -> None:
        self.tmp = tmp
        self.http = http
        self.data_dir = tmp / "data"
        self.ingress = f"127.0.0.1:{free_port()}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.sink_url = f"http://127.0.0.1:{sink_port or free_port()}"
        self.handler_port = free_port()
        env = {sink_env: self.sink_url, **(handler_env or {})}
        self._sink_ready = sink_ready
        self.sink = Process("sink", python("-m", sink, "--port", self.sink_url.rsplit(":", 1)[1]), tmp)
        self.handlers = Process(
            "handlers", python("-m", handler_module, handlers, "--port", str(self.handler_port), "--heartbeat-interval", "0.5",
                               *handler_flags),
            tmp, env)
        #: Sent with every admin request of these helpers (the sidecar reads it from its environment).
        self.admin_headers = {} if admin_token is None else {"authorization": f"Bearer {admin_token}"}
        self._admin_env = {} if admin_token is None else {"SIDECAR_ADMIN_TOKEN": admin_token}
        self.sidecar = Process("sidecar", sidecar_cli(
            "serve", "--data-dir", str(self.data_dir), "--ingress", self.ingress, "--admin", self.admin,
            "--register", f"http://127.0.0.1:{self.handler_port}", *sidecar_flags), tmp, self._admin_env)

    @property
    def processes(self) -> list[Process]:
        return [self.sink, self.handlers, self.sidecar]

    async def start(self) -> None:
        self.sink.start()
        self.handlers.start()
        await eventually(lambda: self._ok(f"{self.sink_url}{self._sink_ready}"), timeout=START_TIMEOUT_S,
                         what="the sink")
        await self._handlers_serving()
        await self.start_sidecar()

    async def start_sidecar(self) -> None:
        """Start the sidecar and wait until it is ready: its admin API answers only once every
        worker's ingress listens, and the handler services are registered."""
        self.sidecar.start()
        await eventually(self._services_registered, timeout=START_TIMEOUT_S,
                         what="the sidecar to serve with services registered")

    async def restart_handlers(self) -> None:
        self.handlers.start()
        await self._handlers_serving()

    async def _handlers_serving(self) -> None:
        await eventually(lambda: self._ok(f"http://127.0.0.1:{self.handler_port}/discover", refused_ok=True),
                         timeout=START_TIMEOUT_S, what="the handlers")

    async def _ok(self, url: str, *, refused_ok: bool = False) -> bool:
        """Whether ``url`` answers 200 (or, with ``refused_ok``, 401: a handler service with
        identity keys serves, but not this unsigned request)."""
        async with self.http.get(url) as response:
            return response.status == 200 or refused_ok and response.status == 401

    async def _services_registered(self) -> bool:
        async with self.http.get(f"http://{self.admin}/services", headers=self.admin_headers) as response:
            return response.status == 200 and bool((await response.json())["services"])

    async def post(self, path: str, body: Any = None, *, raw: bytes | IO[bytes] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (b"" if body is None else msgspec.json.encode(body))
        async with self.http.post(f"http://{self.ingress}{path}", data=data,
                                  headers={"content-type": "application/json", **(headers or {})}) as response:
            return response.status, await _body(response), dict(response.headers)

    async def get(self, path: str, *, admin: bool = False) -> tuple[int, Any]:
        base = self.admin if admin else self.ingress
        async with self.http.get(f"http://{base}{path}", headers=self.admin_headers if admin else None) as response:
            return response.status, await _body(response)

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sidecar ARGS`` pointed at this cluster, as an operator would run it."""
        env = {**os.environ, "SIDECAR_INGRESS": self.ingress, "SIDECAR_ADMIN": self.admin, **self._admin_env}
        return await asyncio.to_thread(
            subprocess.run, sidecar_cli(*args), capture_output=True, text=True, env=env, timeout=60)

    async def admin_call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"http://{self.admin}{path}", json=body,
                                     headers=self.admin_headers) as response:
            return response.status, await _body(response)

    async def sink_counts(self) -> dict[str, int]:
        async with self.http.get(f"{self.sink_url}/counts") as response:
            return await response.json()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.log()[-6000:]}" for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


async def _body(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    try:
        return msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        return raw.decode(errors="replace")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@asynccontextmanager
async def running_cluster(tmp: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
                   flags: list[str], **options: Any) -> AsyncIterator[Cluster]:
    """A started cluster (the test handlers unless ``handlers=`` says otherwise), stopped after;
    its logs are printed when the test failed."""
    options.setdefault("handlers", "tests.e2e.handlers:SERVICES")
    cluster = Cluster(tmp, http, sidecar_flags=flags, **options)
    started = False
    try:
        await cluster.start()
        started = True
        yield cluster
    finally:
        cluster.stop()
        if not started or getattr(request.node, "rep_call_failed", False):
            print(cluster.logs())


@pytest.fixture
async def cluster(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Two workers sharing the partitions (requests cross between them); durability off: a
    process crash loses nothing either way."""
    flags = ["--durability", "none", "--inactivity-timeout", "3", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags) as running:
        yield running


@pytest.fixture
async def costly(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """The handlers that spend (tests/e2e/costly.py) on two workers (worker 0 sums what both journaled)."""
    flags = ["--durability", "none", "--inactivity-timeout", "3", "--workers", "2"]
    async with running_cluster(tmp_path, http, request, flags, handlers="tests.e2e.costly:SERVICES") as running:
        yield running


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
async def durable_cluster(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> AsyncIterator[Cluster]:
    """fsync on, and both ways of running: one process, or workers sharing the partitions."""
    flags = ["--inactivity-timeout", "3", "--workers", str(request.param)]
    async with running_cluster(tmp_path, http, request, flags) as running:
        yield running


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call_failed = report.failed  # type: ignore[attr-defined]
