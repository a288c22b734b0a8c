"""Chaos on a cluster of real processes: three sidecar nodes in front of the ledger service, on
three nats-servers, and the faults the chaos test deals them (SIGKILL of the node that holds the
most work, with or without a NATS server; SIGSTOP of a node past its lease), each measured."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from itertools import count
from pathlib import Path

import aiohttp
import msgspec

from sidecar.cluster.membership import DEAD_AFTER_S
from sidecar.cluster.nats_servers import NatsServers
from sidecar.ids import partition_of_id
from sidecar.process.partitions import PartitionMap
from tests.cluster.ledger import Enter, Leave, Pause, read_ledger
from tests.cluster.nodes import Node, Nodes
from tests.cluster.stores import contents, log_tail, replay
from tests.procs import eventually

#: The promise of docs/cluster.md: a dead node's partitions are served again within this.
FAILOVER_S = 10.0


class Failover(msgspec.Struct, frozen=True):
    """One SIGKILL, measured from the signal: until every partition of the killed node was owned
    by a live node, and until a request to a key of each of them was answered."""

    node: str
    partitions: int
    owned_after_s: float
    served_after_s: float
    #: The NATS server killed with it, if any.
    nats_server: str | None = None


class ChaosCluster:
    def __init__(self, tmp: Path, http: aiohttp.ClientSession, nats: NatsServers, ledger: Path) -> None:
        self.http = http
        self.nats = nats
        self.ledger = ledger
        self.nodes = Nodes(tmp, http, nats.urls, handlers="tests.cluster.ledger_service:SERVICES",
                           env={"LEDGER_PATH": str(ledger)})
        self._paused: set[str] = set()

    async def start(self) -> None:
        await self.nodes.start()
        await eventually(self._all_served, timeout=60, what="every partition owned by a live node")

    def live(self) -> list[Node]:
        return [n for n in self.nodes.nodes if n.process.running and n.name not in self._paused]

    def ingresses(self) -> list[str]:
        return [n.ingress for n in self.live()]

    def admin(self) -> str:
        return self.live()[0].admin

    async def owners(self, via: Node | None = None) -> tuple[int, dict[int, str]]:
        """The partition count, and each owned partition's owner among the nodes alive, as
        ``via`` (a live node) sees them."""
        view = await self.nodes.view(via or self.live()[0])
        return view["partitions"], {p: n["name"] for n in view["nodes"] if n["alive"] for p in n["partitions"]}

    async def busiest(self) -> Node:
        """The live node owning the most invocations in flight (attempts the ledger shows entered
        and not left); the one with the most partitions where nothing is in flight."""
        _, owners = await self.owners()
        lines = read_ledger(self.ledger)
        left = {line.attempt for line in lines if isinstance(line, Leave)}
        inside = Counter(owners.get(partition_of_id(line.invocation) or 0) for line in lines
                         if isinstance(line, Enter) and line.attempt not in left)
        held = Counter(owners.values())
        return max(self.live(), key=lambda n: (inside[n.name], held[n.name]))

    async def kill_and_measure(self, victim: Node, *, nats_server: int | None = None) -> Failover:
        """SIGKILL ``victim`` (and NATS server ``nats_server`` at the same instant), then wait
        until its partitions are owned by live nodes and answer requests again."""
        partitions, owners = await self.owners()
        lost = sorted(p for p, name in owners.items() if name == victim.name)
        if nats_server is not None:
            self.nats.kill(nats_server)
        victim.kill()
        assert victim.killed_at is not None
        killed_at = victim.killed_at
        survivors = {n.name for n in self.live()}

        async def owned() -> float:
            _, now = await self.owners()
            return time.monotonic() if all(now.get(p) in survivors for p in lost) else 0.0

        owned_at = await eventually(owned, timeout=3 * FAILOVER_S, what=f"{victim.name}'s partitions {lost} owned")
        await asyncio.gather(*(self._served(partitions, p, 3 * FAILOVER_S) for p in lost))
        return Failover(node=victim.name, partitions=len(lost), owned_after_s=round(owned_at - killed_at, 3),
                        served_after_s=round(time.monotonic() - killed_at, 3),
                        nats_server=None if nats_server is None else self.nats.names[nats_server])

    async def restart(self, node: Node) -> None:
        node.process.start()
        await self.nodes.until_serving(node)

    async def pause_past_lease(self, victim: Node) -> Pause:
        """SIGSTOP ``victim`` until the others have taken its partitions (its lease ran out) and
        serve them, then SIGCONT it, and wait until it says it serves them no more."""
        partitions, owners = await self.owners()
        lost = frozenset(p for p, name in owners.items() if name == victim.name)
        assert victim.process.proc is not None
        self._paused.add(victim.name)
        victim.process.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            async def taken() -> float:
                _, now = await self.owners()
                return time.monotonic() if all(now.get(p) not in (None, victim.name) for p in lost) else 0.0

            taken_over_at = await eventually(taken, timeout=DEAD_AFTER_S + 3 * FAILOVER_S,
                                             what=f"{victim.name}'s partitions taken while it is stopped")
            await asyncio.gather(*(self._served(partitions, p, 3 * FAILOVER_S) for p in lost))
            resumed_from = victim.process.log_path.stat().st_size
        finally:
            victim.process.proc.send_signal(signal.SIGCONT)
            self._paused.discard(victim.name)

        async def stood_down() -> bool:
            with victim.process.log_path.open("rb") as log:
                log.seek(resumed_from)
                # The words of sidecar.cluster.node's Generation.end.
                return f"node {victim.name} ends this generation".encode() in log.read()

        await eventually(stood_down, timeout=3 * FAILOVER_S, what=f"{victim.name} to stop serving once resumed")
        return Pause(node=victim.name, partitions=lost, stopped_at=stopped_at, taken_over_at=taken_over_at)

    async def _served(self, partitions: int, partition: int, timeout: float) -> None:
        """Wait until a read of a key in ``partition`` is answered, through the first live node."""
        key = probe_key(partitions, partition)

        async def answered() -> bool:
            async with self.http.post(f"http://{self.live()[0].ingress}/LedgerCounter/{key}/value", data=b"",
                                      timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200

        await eventually(answered, timeout=timeout, what=f"partition {partition} answering (key {key})")

    async def _all_served(self) -> bool:
        partitions, owners = await self.owners()
        return len(owners) == partitions

    def stop(self) -> None:
        self.nodes.stop()

    def logs(self) -> str:
        return self.nodes.logs()


def probe_key(partitions: int, partition: int) -> str:
    """A ``LedgerCounter`` key of ``partition`` that the workload never adds to."""
    mapping = PartitionMap.single(partitions)
    return next(key for key in (f"probe-{i}" for i in count()) if mapping.of_key("LedgerCounter", key) == partition)


async def replay_check(cluster: ChaosCluster, tmp: Path) -> None:
    """Once every node's store holds the whole log, stop them all: replaying the log into an
    empty store gives each one's data, byte for byte."""
    tail = await log_tail(cluster.nats.urls)
    for node in cluster.live():
        async def caught_up(node: Node = node) -> bool:
            return bool((await cluster.nodes.view(node))["applied"] >= tail)
        await eventually(caught_up, timeout=30, what=f"{node.name} to apply the log up to {tail}")
    cluster.stop()
    await replay(cluster.nats.urls, tmp / "replayed")
    replayed = contents(tmp / "replayed")
    assert replayed["invocations"], "the replay holds the workload's invocations"
    for node in cluster.nodes.nodes:
        assert contents(node.data_dir) == replayed, f"{node.name}'s store differs from the log replayed"

