"""What a node serves, and where everything else is served: the partition map and the mesh's
addresses in cluster mode.

A node serves the partitions it claimed when it started serving (a generation: see ``node.py``);
the set does not change while it serves, so every part of the invoker that asks ``owns`` gets the
same answer throughout. Every other partition is forwarded to the node the assignment table
names, over TCP to the address that node publishes with its heartbeats.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from ..process.mesh import PeerConnection
from ..process.partitions import PartitionMap

#: An owner no node is: requests for an unassigned partition wait, then answer 503.
NOBODY = -1


class ClusterPartitionMap(PartitionMap, frozen=True):
    """``owned``: this node's partitions; ``owner_of``: a partition's node number (``NOBODY``)."""

    owned: frozenset[int] = frozenset()
    owner_of: Callable[[int], int] = lambda partition: NOBODY
    me: int = 0

    def owner(self, partition: int) -> int:
        return self.me if partition in self.owned else self.owner_of(partition)

    def owns(self, partition: int) -> bool:
        return partition in self.owned

    def shares_batches(self, partition: int, other: int) -> bool:
        """Never across partitions: each partition's batches go to its own log."""
        return partition == other

    def of_target(self, service: str, key: str | None, handler: str, idempotency_key: str | None) -> int | None:
        partition = super().of_target(service, key, handler, idempotency_key)
        if partition is None and not self.owned:  # a keyless call must go to a node that serves
            return random.randrange(self.partitions)
        return partition

    def local_partition(self, counter: int) -> int:
        owned = sorted(self.owned)
        return owned[counter % len(owned)] if owned else counter % self.partitions


class NodeEndpoints:
    """The mesh between nodes: TCP, to the address each node publishes (``address_of``)."""

    def __init__(self, me: int, listen: tuple[str, int], address_of: Callable[[int], tuple[str, int] | None],
                 members: Callable[[], list[int]]) -> None:
        self.me = me
        self._listen = listen
        self._address_of = address_of
        self._members = members
        self.bound: tuple[str, int] | None = None

    def others(self) -> list[int]:
        return [number for number in self._members() if number != self.me]

    async def listen(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
        server = await asyncio.get_running_loop().create_server(factory, *self._listen, backlog=256)
        self.bound = server.sockets[0].getsockname()[:2]
        return server

    async def connect(self, peer: int, factory: Callable[[], PeerConnection]) -> PeerConnection:
        address = self._address_of(peer)
        if address is None:
            raise ConnectionRefusedError(f"node {peer} is not known to be alive")
        _, connection = await asyncio.get_running_loop().create_connection(factory, *address)
        return connection
