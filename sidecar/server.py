"""Assembly: open every resource in one place, serve, and close them in reverse order."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from aiohttp import web

from .admin import Admin
from .config import Settings, parse_address
from .ids import IdGenerator
from .ingress import Ingress
from .invoker import Invoker
from .registry import Registry, RegistrationError
from .store import Store

log = logging.getLogger("sidecar")

#: How long ``--register`` keeps trying a deployment that is not up yet.
REGISTER_PATIENCE_S = 30.0


async def _register_on_start(registry: Registry, uris: list[str], http: aiohttp.ClientSession) -> None:
    for uri in uris:
        deadline = asyncio.get_running_loop().time() + REGISTER_PATIENCE_S
        delay = 0.05
        while True:
            try:
                record, _ = await registry.register(uri, force=True, http=http)
                log.info("registered %s: %s", uri, ", ".join(s.name for s in record.services))
                break
            except RegistrationError as exc:
                if asyncio.get_running_loop().time() > deadline or exc.status != 400:
                    log.error("could not register %s: %s", uri, exc.message)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


async def _site(stack: AsyncExitStack, app: web.Application, address: str, name: str) -> None:
    host, port = parse_address(address, name)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, host, port, backlog=1024).start()


@asynccontextmanager
async def running(settings: Settings, on_store_lost: Callable[[str], None] | None = None) -> AsyncIterator[Invoker]:
    """The sidecar, serving on its ingress and admin addresses until the context exits."""
    async with AsyncExitStack() as stack:
        store = Store(settings.data_dir, durability=settings.durability, map_size=settings.map_size_bytes)
        await store.start(on_lost=on_store_lost)
        stack.push_async_callback(store.close)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5.0))
        stack.push_async_callback(http.close)
        ids = IdGenerator()
        registry = Registry(store, ids)
        invoker = Invoker(store=store, registry=registry, settings=settings, http=http, ids=ids)
        stack.push_async_callback(invoker.close)
        await _register_on_start(registry, settings.register, http)
        invoker.start()
        await _site(stack, Admin(invoker=invoker, registry=registry, store=store, settings=settings,
                                 http=http).app(), settings.admin, "admin")
        await _site(stack, Ingress(invoker, registry, settings).app(), settings.ingress, "ingress")
        log.info("sidecar ready: ingress http://%s, admin http://%s, data %s (durability %s)",
                 settings.ingress, settings.admin, settings.data_dir, settings.durability)
        yield invoker


async def serve(settings: Settings) -> int:
    """Serve until a signal (exit status 0) or until the writer process dies (1)."""
    stop = asyncio.Event()
    failure: list[str] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def store_lost(reason: str) -> None:
        log.critical("%s: stopping; a restart recovers from what is on disk", reason)
        failure.append(reason)
        stop.set()

    async with running(settings, store_lost):
        await stop.wait()
        log.info("shutting down")
    return 1 if failure else 0


def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM (blocking), on uvloop where available."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        status = runner.run(serve(settings))
    if status:
        raise SystemExit(status)
