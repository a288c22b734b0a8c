"""Assembly: open every resource in one place, serve, and close them in reverse order."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import msgspec
from aiohttp import web

from handler_sdk import logs

from ..http.admin import Admin
from ..http.response_counts import count_responses
from ..cli.config import Settings, parse_address
from ..ids import IdGenerator
from ..http.ingress import Ingress
from ..invoker import Invoker
from ..http.log_limits import limit_server_log
from .mesh import Mesh, WorkerEndpoints
from .peers import MeshPeers, serve_breakers, serve_calls, serve_limits
from ..metrics import Metrics
from ..schedules.scheduler import Scheduler
from .partitions import PartitionMap
from ..transport.registry import Registry, RegistrationError
from ..transport.signing import Signer
from ..store import Changes, Store, StoreError
from ..time_skipping import SkippingClock
from ..tracing import Tracing
from .. import clock

if TYPE_CHECKING:  # cluster mode is imported only when asked for
    from ..cluster.node import NodeContext

log = logging.getLogger("sidecar")

#: How long ``--register`` keeps trying a deployment that is not up yet.
REGISTER_PATIENCE_S = 30.0


async def _register_on_start(registry: Registry, uris: list[str], http: aiohttp.ClientSession, admin: Admin) -> None:
    for uri in uris:
        deadline = asyncio.get_running_loop().time() + REGISTER_PATIENCE_S
        delay = 0.05
        while True:
            try:
                known = next((d for d in registry.deployments.values() if d.uri == uri.rstrip("/")), None)
                record, _ = await registry.register(  # a restart keeps the transport it was registered with
                    uri, force=True, http=http, transport=known.transport if known else "websocket")
                log.info("registered %s: %s", uri, ", ".join(s.name for s in record.services))
                await admin.deployments_changed()
                break
            except RegistrationError as exc:
                if asyncio.get_running_loop().time() > deadline or exc.status != 400:
                    log.error("could not register %s: %s", uri, exc.message)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


async def _site(stack: AsyncExitStack, app: web.Application, address: str, name: str, *, shared: bool,
                metrics: Metrics, listening: socket.socket | None = None) -> None:
    """Serve ``app`` at ``address``. A handler whose client disconnected is cancelled
    (``handler_cancellation``), so that a call, an attach or a state edit whose client gave up (a
    timeout, a poller that attaches again and again) stops waiting at once instead of holding its
    task until the invocation ends or the key is free. What such a handler started goes on:
    creating an invocation and resolving an awakeable await futures of the invoker's own,
    registrations and purges are shielded, and the owning worker is told over the mesh
    (``Abandoned``)."""
    host, port = parse_address(address, name)
    app.on_response_prepare.append(count_responses(metrics.http_responses, name))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    if listening is not None:  # a cluster node's, open across its generations (a copy is closed with this one)
        await web.SockSite(runner, listening.dup()).start()
        return
    # Workers share the ingress port: the kernel spreads connections over them (SO_REUSEPORT).
    await web.TCPSite(runner, host, port, backlog=1024, reuse_port=shared or None).start()


class WorkerSpec(msgspec.Struct, frozen=True):
    """This process's place among the workers, and its inherited socket to the writer process."""

    index: int
    workers: int
    partitions: int
    writer_fd: int


@asynccontextmanager
async def running(
    settings: Settings, on_store_lost: Callable[[str], None] | None = None, worker: WorkerSpec | None = None,
    test_clock: bool = False, node: NodeContext | None = None,
) -> AsyncIterator[Invoker]:
    """The sidecar (or one worker of it, or a cluster node's generation: ``node``, whose store is
    started and replicated already), serving until the context exits. ``test_clock``: on the
    clock that ``POST /test/clock`` advances (tests only; one worker)."""
    async with AsyncExitStack() as stack:
        skipping = SkippingClock.load(Path(settings.data_dir)) if test_clock else None
        if skipping is not None:  # before anything reads the clock: recovery arms its timers on it
            clock.use_skipping_clock(skipping)
            stack.callback(clock.use_skipping_clock, None)
        mesh: Mesh | None = None
        metrics = Metrics()
        partitions: PartitionMap
        if node is not None:
            store, partitions, mesh = node.store, node.partitions, Mesh(node.endpoints)
        else:
            store = Store(settings.data_dir, durability=settings.durability, map_size=settings.map_size_bytes,
                          blob_threshold=settings.blob_threshold_bytes)
            stack.push_async_callback(store.close)
            if worker is None:
                partitions = PartitionMap.single(store.partition_count(settings.partitions))
                await store.start(on_lost=on_store_lost, on_commit=metrics.observe_commit)
            else:
                partitions = PartitionMap(partitions=worker.partitions, workers=worker.workers, index=worker.index)
                await store.start(writer_socket=socket.socket(fileno=worker.writer_fd), on_lost=on_store_lost,
                                  on_commit=metrics.observe_commit)
                mesh = Mesh(WorkerEndpoints(settings.data_dir, worker.index, worker.workers))
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5.0))
        stack.push_async_callback(http.close)
        ids = IdGenerator()
        signer = Signer.load(settings.signing_key)
        registry = Registry(store, ids, signer)
        tracing = Tracing.from_environment()
        stack.push_async_callback(asyncio.to_thread, tracing.shutdown)  # after the invoker: its last spans too
        invoker = Invoker(store=store, registry=registry, settings=settings, http=http, ids=ids,
                          partitions=partitions, metrics=metrics, signer=signer, tracing=tracing,
                          peers=MeshPeers(mesh, partitions) if mesh is not None else None)
        stack.push_async_callback(invoker.close)
        first = partitions.index == 0
        ingress = Ingress(invoker, registry, settings, partitions, mesh)
        scheduler = Scheduler(store=store, partitions=partitions, sender=ingress, metrics=metrics)
        stack.push_async_callback(scheduler.close)  # before the invoker: no firing into a closing one
        admin = Admin(invoker=invoker, registry=registry, store=store, settings=settings, http=http,
                      partitions=partitions, metrics=metrics, scheduler=scheduler, mesh=mesh, test_clock=skipping,
                      cluster_view=node.view if node is not None else None)
        if mesh is not None:
            serve_calls(mesh, invoker.calls)
            serve_breakers(mesh, invoker.gates, invoker.board)
            serve_limits(mesh, invoker.slots, invoker.limits)
            await mesh.start()
            stack.push_async_callback(mesh.close)
        invoker.start()
        await _site(stack, ingress.app(), settings.ingress, "ingress", shared=mesh is not None and node is None,
                    metrics=metrics, listening=node.listening["ingress"] if node is not None else None)
        if mesh is not None:
            mesh.serving = True
        scheduler.start()  # its firings are sends: the ingress, and the mesh to the other workers, are up
        if first:  # one admin endpoint; it hands invocation-specific requests to their owners
            # Readiness means ready: /health answers once the writer commits and every ingress listens.
            await store.submit(Changes())
            if mesh is not None and node is None:  # nodes come and go: each serves on its own
                await mesh.until_all_serving()
            await _site(stack, admin.app(), settings.admin, "admin", shared=False, metrics=metrics,
                        listening=node.listening["admin"] if node is not None else None)
        if node is not None and mesh is not None:
            # Runs before the sites drain: a generation that ends hands nothing more over, and a
            # request forwarded to another node (a paused one may never answer) fails now, a 503.
            stack.push_async_callback(mesh.close)
        if first and settings.register:  # in the background: a handler still starting must not hold up serving
            registering = asyncio.ensure_future(_register_on_start(registry, settings.register, http, admin))
            stack.callback(registering.cancel)
        if node is not None:
            role, durability = f"node {settings.node} ", "the cluster's log"
        else:
            role = f"worker {partitions.index + 1}/{partitions.workers} " if mesh else ""
            durability = settings.durability
        log.info("sidecar %sready: ingress http://%s, admin http://%s, data %s (durability %s)",
                 role, settings.ingress, settings.admin, settings.data_dir, durability)
        yield invoker


async def serve(settings: Settings, worker: WorkerSpec | None = None, test_clock: bool = False) -> int:
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

    async with running(settings, store_lost, worker, test_clock) as invoker:
        await stop.wait()
        log.info("shutting down")
        if failure:
            # Before the HTTP sites drain their requests: callers waiting on an invocation must
            # not hold up the exit, and no attempt may run on (its steps could never be journaled).
            await invoker.close(StoreError(failure[0]))
    return 1 if failure else 0


def configure_logging(settings: Settings) -> None:
    """Log as the settings say; the writer process, started later, inherits them (environment).
    A flood of malformed requests leaves a few lines a second, not one traceback each."""
    logs.configure_logging(settings.log_level, settings.log_format)
    os.environ["SIDECAR_LOG_LEVEL"], os.environ["SIDECAR_LOG_FORMAT"] = settings.log_level, settings.log_format
    limit_server_log()


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where available; its exit status."""
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its affinity mask, narrowed by a container's CPU quota.

    A container limited with ``--cpus 2`` on a 64-core host still sees 64 cores in its affinity
    mask; one worker per visible core would oversubscribe the quota and throttle every worker.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def default_workers(cores: int) -> int:
    """The worker count when ``--workers`` is 0: 1 below 4 usable cores, else half of them.

    The sidecar shares its machine with the handler services it fronts (one core per copy) and
    often with its clients. On 2 cores a second worker is slower than one: it adds a mesh hop for
    half the requests and takes CPU from the handler service. Half the cores leaves the rest to
    them; a machine that runs nothing but the sidecar can ask for more with ``--workers``.
    """
    return 1 if cores < 4 else cores // 2


def _cpu_quota(cgroup: Path) -> float | None:
    """The cgroup's CPU quota in cores (v2 ``cpu.max``, else v1 ``cpu.cfs_*``); None: unlimited."""
    try:
        fields = (cgroup / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def run(settings: Settings, *, test_clock: bool = False) -> None:
    """Serve until SIGINT or SIGTERM (blocking): in this process, or as a group of workers.
    ``test_clock`` (``serve --test-clock``, for tests) serves in this process, whatever the cores."""
    configure_logging(settings)
    Signer.load(settings.signing_key)  # a bad key is refused here, once, not by each worker as it starts
    if test_clock:
        SkippingClock.load(Path(settings.data_dir))  # an unreadable offset is refused here, as a bad key
    # An advance moves this process's clock: under a test clock it must be the only worker.
    workers = 1 if test_clock or settings.cluster else settings.workers or default_workers(usable_cores())
    if settings.cluster:
        from ..cluster.node import serve_node

        status = run_loop(serve_node(settings))
    elif workers > 1:
        from .supervisor import supervise

        status = supervise(settings, workers)
    else:
        status = run_loop(serve(settings, test_clock=test_clock))
    if status:
        raise SystemExit(status)
