"""A cluster node: follow the log, claim partitions, serve them until the ownership changes.

A node serves in **generations**. Each one: catch the local store up with the log, read the
assignment table, claim the partitions this node should now own (a dead node's, or unassigned
ones, by rendezvous hashing over the nodes alive, so that the survivors agree on who takes what
without talking), fence each claim in the log, then run the sidecar over exactly those
partitions. When this node loses a partition (another node took it: it was paused or cut off
past its heartbeats), when the log refuses an append, or when a partition becomes this node's to
take, the generation ends: attempts are cut, waiting clients are let go, and the next generation
recovers from the store as a restart would. This is the cold hand-over of docs/partitions.md:
blunt, but no partition is ever served from two generations, and no attempt resumes from a
journal an older one could still append to.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from ..cli.config import Settings, parse_address
from ..clock import now_ms
from ..store import Store
from ..store.backup import BackupError
from .changelog import Changelog, Fenced, LogRecord, LogUnavailable, encode_record
from .claims import fence, plan
from .commits import ReplicatedCommits
from .follower import Follower, applied_marks
from .snapshots import SNAPSHOT_PREFIX, restore_snapshot, take_snapshot
from .membership import Membership, NodeInfo, node_number
from .nats_log import NatsChangelog, close, connect
from .ownership import NOBODY, ClusterPartitionMap, NodeEndpoints
from .tasks import stop_tasks

log = logging.getLogger(__name__)

#: How long a node listens for the others' heartbeats before its first plan (nodes started
#: together then share the partitions instead of the first one taking them all).
_SETTLE_S = 2.0
#: Room in a log message for a record's own framing and the message's headers.
_RECORD_FRAMING = 64 << 10
#: A generation that ended sooner than this is followed by a pause (the others' moves first).
_SHORT_GENERATION_S = 0.5


class NodeContext(msgspec.Struct, frozen=True):
    """What ``server.running`` needs to serve as a cluster node instead of alone."""

    store: Store
    partitions: ClusterPartitionMap
    endpoints: NodeEndpoints
    #: ``GET /cluster``: the nodes, alive or not, and the partitions each serves.
    view: Callable[[], dict[str, object]]
    #: The ingress's and the admin API's sockets, listening from the node's start to its end:
    #: between two generations connections wait in their backlog instead of being refused.
    listening: dict[str, socket.socket]


class Generation:
    """One generation of a node: from claiming partitions to giving them up (see the module)."""

    def __init__(self, settings: Settings, changelog: Changelog, membership: Membership, partitions: int,
                 store: Store, record_limit: int) -> None:
        self._settings = settings
        self._record_limit = record_limit
        self._changelog = changelog
        self._membership = membership
        self._partitions = partitions
        self._store = store
        self._name = membership.me.name
        self._owned: dict[int, int] = {}
        self.ended = asyncio.Event()
        self.reason = ""
        self._follower: Follower | None = None  # from ``claim``: the store's writer is started then
        self.commits: ReplicatedCommits | None = None

    def end(self, reason: str) -> None:
        """Serve no more: nothing is acknowledged from here on (the commit path is stopped)."""
        if self.ended.is_set():
            return
        self.reason = reason
        self.ended.set()
        log.warning("node %s ends this generation: %s", self._name, reason)
        if self.commits is not None:
            self.commits.stop(reason)

    async def claim(self, token: str) -> None:
        """Catch up with the log, then take and fence this node's partitions."""
        follower = self._follower = Follower(log=self._changelog, store=self._store, writer=self._store.writer,
                                             partitions=self._partitions, owns=lambda p: p in self._owned,
                                             on_stop=self.end)
        follower.start()
        await follower.reached(await self._changelog.tail())
        membership = self._membership
        wanted = plan(self._name, self._partitions, membership.assignments(), sorted(membership.alive()))
        claimed = set(wanted.keep)
        for partition, previous in wanted.take.items():
            if await membership.claim(partition, previous):
                claimed.add(partition)
        for partition in sorted(claimed):
            self._owned[partition] = await fence(self._changelog, follower, partition, self._name, token)
        self.commits = ReplicatedCommits(log=self._changelog, writer=self._store.writer, node=self._name,
                                         partitions=self._partitions, owned=self._owned, on_stop=self.end,
                                         shared_applied=follower.reached, confirmed=self._membership.holds,
                                         record_limit=self._record_limit)
        self._store.replicate(self.commits)
        log.info("node %s serves %d of %d partitions", self._name, len(self._owned), self._partitions)
        self.check()  # what changed while it claimed

    @property
    def applied(self) -> int:
        return self._follower.position if self._follower is not None else 0

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self._owned)

    def check(self) -> None:
        """The assignments or the nodes alive changed: end if this node lost a partition, or
        has one to take."""
        membership = self._membership
        wanted = plan(self._name, self._partitions, membership.assignments(), sorted(membership.alive()))
        lost = self.owned - wanted.keep
        if lost:
            self.end(f"partitions {sorted(lost)} are assigned to another node now")
        elif wanted.take:
            self.end(f"partitions {sorted(wanted.take)} are this node's to take")

    async def keep_snapshots(self, interval_s: float) -> None:
        """Every ``interval_s``: snapshot this store, then trim the log below the oldest snapshot
        of the nodes alive (a node whose store is older restores a snapshot when it starts)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                assert self._follower is not None
                await take_snapshot(node=self._name, store=self._store, changelog=self._changelog,
                                    follower=self._follower, commits=self.commits)
                kept = [found[1] for name in sorted(self._membership.alive())
                        if (found := await self._changelog.get_snapshot(SNAPSHOT_PREFIX + name)) is not None]
                if len(kept) == len(self._membership.alive()):
                    await self._changelog.trim(min(kept))
            except (LogUnavailable, BackupError, OSError) as exc:
                log.warning("no snapshot this time: %s", exc)
            except Exception:
                log.exception("no snapshot this time")

    async def close(self) -> None:
        if self._follower is not None:
            await self._follower.close()


def cluster_view(membership: Membership, partitions: int, applied: int) -> dict[str, object]:
    """``GET /cluster``: the nodes and the partitions each should serve, as this node sees them;
    ``node``: this one, ``applied``: the log sequence up to which its store holds every record."""
    alive = membership.alive()
    assignments = membership.assignments()
    names = sorted(set(alive) | set(assignments.values()))
    return {"partitions": partitions, "node": membership.me.name, "applied": applied, "nodes": [
        {"name": name, "alive": name in alive,
         "partitions": sorted(p for p, owner in assignments.items() if owner == name)} for name in names]}


def _listen(address: str, name: str) -> socket.socket:
    host, port = parse_address(address, name)
    sock = socket.create_server((host.strip("[]"), port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                backlog=1024, reuse_port=False)
    sock.setblocking(False)
    return sock


def _free_port(host: str) -> int:
    """A port free now, kept for every generation of this process (others learn it once)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def serve_node(settings: Settings) -> int:
    """Serve as a cluster node until SIGINT or SIGTERM: generation after generation."""
    assert settings.node is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = parse_address(settings.mesh, "mesh", any_port=True)
    mesh = (host, port or _free_port(host))
    listening = {name: _listen(getattr(settings, name), name) for name in ("ingress", "admin")}
    connection = await connect(settings.cluster, settings.node)
    try:
        changelog = await NatsChangelog.open(connection)
        partitions = await changelog.partition_count(settings.partitions)
        record_limit = max(connection.max_payload - _RECORD_FRAMING, _RECORD_FRAMING)
        me = NodeInfo(name=settings.node, number=await node_number(changelog.cluster, settings.node),
                      mesh=f"{mesh[0]}:{mesh[1]}", ingress=settings.ingress, admin=settings.admin, started_ms=now_ms())
        membership = Membership(connection, changelog.cluster, me)
        await membership.start()
        try:
            await asyncio.sleep(_SETTLE_S)  # hear the heartbeats of nodes that started with this one
            while not stop.is_set():
                began = loop.time()
                await _serve_generation(settings, changelog, membership, partitions, mesh, stop, record_limit,
                                        listening)
                if loop.time() - began < _SHORT_GENERATION_S and not stop.is_set():
                    await asyncio.sleep(_SHORT_GENERATION_S)  # ended at once: let the others move first
        finally:
            await membership.close()
    finally:
        await close(connection)
        for sock in listening.values():
            sock.close()
    return 0


async def _open_store(settings: Settings, changelog: Changelog, membership: Membership, partitions: int) -> Store:
    """This node's store, restored from a snapshot first where the log was trimmed past it (or it
    is new and the log no longer starts at its beginning). LMDB is not synced: the log is what
    survives a crash, and a restart applies it from the marks this store holds."""
    for restored in (False, True):
        store = Store(settings.data_dir, durability="none", map_size=settings.map_size_bytes,
                      blob_threshold=settings.blob_threshold_bytes)
        stored = store.partition_count(partitions)
        if stored != partitions:
            store.close_environment()
            raise ClusterMismatch(f"{settings.data_dir} holds {stored} partitions, the cluster {partitions}: "
                                  "it belongs to another cluster (start this node on an empty directory)")
        start = min(applied_marks(store, partitions + 1).values()) + 1
        first = await changelog.first()
        if start >= first:
            return store
        store.close_environment()
        if restored or await restore_snapshot(data_dir=settings.data_dir, changelog=changelog,
                                              names=sorted({*membership.alive(), settings.node or ""})) is None:
            raise ClusterMismatch(f"the log starts at {first}, past this store's {start}, and no snapshot "
                                  "reaches that far: this node cannot catch up")
    raise AssertionError("unreachable")


async def _serve_generation(settings: Settings, changelog: NatsChangelog, membership: Membership, partitions: int,
                            mesh: tuple[str, int], stop: asyncio.Event, record_limit: int,
                            listening: dict[str, socket.socket]) -> None:
    from ..process.server import running
    from ..store import StoreError

    store = await _open_store(settings, changelog, membership, partitions)
    generation = Generation(settings, changelog, membership, partitions, store, record_limit)
    await store.start(on_lost=generation.end)
    watching = asyncio.ensure_future(_watch(membership, generation))
    try:
        await generation.claim(secrets.token_hex(6))
        if generation.ended.is_set():
            return
        me = membership.me

        def owner_of(partition: int) -> int:
            name = membership.assignments().get(partition)
            node = membership.by_name(name) if name is not None else None
            return node.number if node is not None else NOBODY

        def address_of(number: int) -> tuple[str, int] | None:
            node = membership.node(number)
            return parse_address(node.mesh) if node is not None else None

        context = NodeContext(
            store=store,
            partitions=ClusterPartitionMap(partitions=partitions, workers=1, index=0, owned=generation.owned,
                                           owner_of=owner_of, me=me.number),
            endpoints=NodeEndpoints(me.number, mesh, address_of,
                                    lambda: [node.number for node in membership.alive().values()]),
            view=lambda: cluster_view(membership, partitions, generation.applied), listening=listening)
        async with running(settings, generation.end, node=context) as invoker:
            snapshots = asyncio.ensure_future(generation.keep_snapshots(settings.snapshot_interval_s))
            await _first(stop.wait(), generation.ended.wait())
            await stop_tasks(snapshots)
            if generation.ended.is_set():
                # Before the HTTP sites drain: waiting callers go at once, no attempt runs on.
                await invoker.close(StoreError(generation.reason))
    finally:
        await stop_tasks(watching)
        await generation.close()
        await store.close()


async def _watch(membership: Membership, generation: Generation) -> None:
    """Check the generation against each change of the assignments or of the nodes alive."""
    while not generation.ended.is_set():
        await membership.changed.wait()
        membership.changed.clear()
        if generation.commits is not None:  # claimed: what it serves is fixed now
            generation.check()


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class ClusterMismatch(RuntimeError):
    """The data directory belongs to another cluster (another partition count)."""
