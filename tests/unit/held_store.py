"""The real LMDB store with commits a test lets through, and an invoker on top of it, serving a
real SDK app: a test can act between a write's submit and its commit."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from handler_sdk import app
from sidecar.cli.config import Settings
from sidecar.ids import IdGenerator
from sidecar.invoker import Invoker
from sidecar.metrics import Metrics
from sidecar.process.partitions import PartitionMap
from sidecar.transport.registry import Registry, Route
from sidecar.store import Store, StoreError
from sidecar.store.batch import WriteBatch
from sidecar.store.writer_client import OnDurable


class HeldStore(Store):
    """``submit`` queues; ``commit`` applies what is queued in submit order, as the writer does.

    Like the writer, a batch whose future someone cancelled is committed all the same."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, durability="none", map_size=64 * 1024**2)
        self.queued: list[tuple[WriteBatch, asyncio.Future[None], OnDurable | None]] = []
        self.auto = True  # commit on the next pass of the loop, as a fast disk would
        #: False: every commit fails as the writer's does when the map or the disk is full.
        self.room = True
        self._full = False

    @property
    def full(self) -> bool:
        return self._full

    def submit(self, batch: WriteBatch, on_durable: OnDurable | None = None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued.append((batch, future, on_durable))
        if self.auto:
            asyncio.get_running_loop().call_soon(self.commit)
        return future

    def commit(self) -> None:
        queued, self.queued = self.queued, []
        for batch, future, on_durable in queued:
            error = None if self.room else "MDB_MAP_FULL: Environment mapsize limit reached"
            self._full = error is not None
            if error is None:
                self.write_now(batch)
            if future.done():
                continue
            if on_durable is not None:
                on_durable(error)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(StoreError(error))

    async def close(self) -> None:
        self.close_environment()


class Rig:
    def __init__(self, store: HeldStore, invoker: Invoker, registry: Registry, metrics: Metrics) -> None:
        self.store = store
        self.invoker = invoker
        self.registry = registry
        self.metrics = metrics

    def route(self, service: str, handler: str) -> Route:
        found = self.registry.route(service, handler)
        assert found is not None
        return found

    async def submit(self, service: str, handler: str, body: bytes = b"null", key: str | None = None) -> str:
        invocation_id, _ = await self.invoker.lifecycle.submit(self.route(service, handler), key, body, {}, None)
        return invocation_id


@asynccontextmanager
async def rig(tmp_path: Path, *services: Any, **settings: Any) -> AsyncIterator[Rig]:
    """An invoker over a ``HeldStore``, with ``services`` served by the SDK and registered."""
    server = TestServer(app(list(services), heartbeat_interval=0.2, suspend_after=math.inf))
    await server.start_server()
    store = HeldStore(tmp_path / "data")
    async with aiohttp.ClientSession() as http:
        ids = IdGenerator()
        registry = Registry(store, ids)
        await registry.register(str(server.make_url("")), force=False, http=http)
        metrics = Metrics()
        invoker = Invoker(store=store, registry=registry, settings=Settings(**settings), http=http, ids=ids,
                          partitions=PartitionMap.single(), metrics=metrics)
        invoker.start()
        try:
            yield Rig(store, invoker, registry, metrics)
        finally:
            await invoker.close()
            await server.close()
            await store.close()
