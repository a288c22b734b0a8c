"""Membership on real nats-servers: nodes see each other, the partition table changes only by
compare-and-set, a silent node is judged dead after ``dead_after_s`` (and nobody is during a
NATS election), and node numbers are unique and kept across restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS

from sidecar.cluster.membership import Membership, NodeInfo, node_number
from sidecar.cluster.nats_log import CLUSTER_BUCKET, NatsChangelog, close, connect
from sidecar.cluster.nats_servers import NatsServers
from tests.procs import eventually

Start = Callable[..., Awaitable[Membership]]


def _info(name: str, number: int) -> NodeInfo:
    return NodeInfo(name=name, number=number, mesh=f"127.0.0.1:{7000 + number}", ingress=f"127.0.0.1:{8000 + number}",
                    admin=f"127.0.0.1:{9000 + number}", started_ms=1)


@pytest.fixture
async def start(nats_servers: NatsServers) -> AsyncIterator[Start]:
    """Start a node's Membership on a client of its own (closed after the test)."""
    clients: list[NATS] = []
    memberships: list[Membership] = []

    async def _start(name: str, number: int, **options: float) -> Membership:
        client = await connect(nats_servers.urls, name)
        clients.append(client)
        changelog = await NatsChangelog.open(client)
        membership = Membership(client, changelog.cluster, _info(name, number), **options)
        memberships.append(membership)
        await membership.start()
        return membership

    yield _start
    for membership in memberships:
        await membership.close()
    for client in clients:
        await close(client)


async def _holds(check: Callable[[], bool]) -> bool:
    return check()


async def test_two_nodes_see_each_other(start: Start) -> None:
    a = await start("a", 1)
    b = await start("b", 2)
    await eventually(lambda: _holds(lambda: set(a.alive()) == set(b.alive()) == {"a", "b"}), timeout=10,
                     what="both nodes alive in both views")
    assert a.alive()["b"] == _info("b", 2) and a.by_name("b") == _info("b", 2)
    assert b.node(1) == _info("a", 1) and b.node(9) is None and a.by_name("c") is None
    assert a.changed.is_set()


async def test_the_partition_table_changes_only_by_compare_and_set(start: Start) -> None:
    a = await start("a", 1)
    b = await start("b", 2)
    assert await a.claim(0, None) is True
    assert await b.claim(0, None) is False  # stale: it has an owner now
    assert await b.claim(0, "a") is True
    assert await a.claim(0, "a") is False  # stale previous
    await eventually(lambda: _holds(lambda: a.assignments() == b.assignments() == {0: "b"}), timeout=10,
                     what="both views to show b owning partition 0")
    a.changed.clear()
    await a.release(0)  # not a's: nothing happens
    assert await a.claim(0, "b") is True  # the table still said b
    await a.release(0)
    await eventually(lambda: _holds(lambda: a.assignments() == b.assignments() == {}), timeout=10,
                     what="the released partition to have no owner")
    assert a.changed.is_set()
    assert await b.claim(0, None) is True  # a released partition is claimed as one never owned


async def test_a_silent_node_is_judged_dead_after_dead_after_s(start: Start) -> None:
    a = await start("a", 1, heartbeat_s=0.2, dead_after_s=1.5)
    b = await start("b", 2, heartbeat_s=0.2, dead_after_s=1.5)
    await eventually(lambda: _holds(lambda: "b" in a.alive()), timeout=10, what="b alive in a's view")
    for task in b._tasks:  # b stops heartbeating without a word, as a SIGKILLed node does
        task.cancel()
    stopped = time.monotonic()
    await eventually(lambda: _holds(lambda: "b" not in a.alive()), timeout=10, what="b judged dead")
    assert 1.5 - 0.3 <= time.monotonic() - stopped <= 1.5 + 2.0
    assert set(a.alive()) == {"a"}


async def test_a_node_that_closes_is_gone_at_once(start: Start) -> None:
    a = await start("a", 1, heartbeat_s=0.2, dead_after_s=5.0)
    b = await start("b", 2, heartbeat_s=0.2, dead_after_s=5.0)
    await eventually(lambda: _holds(lambda: "b" in a.alive()), timeout=10, what="b alive in a's view")
    stopped = time.monotonic()
    await b.close()
    await eventually(lambda: _holds(lambda: "b" not in a.alive()), timeout=10, what="b gone")
    assert time.monotonic() - stopped < 5.0, "a node that says it leaves is not waited out"


async def test_nobody_is_judged_dead_during_a_nats_election(nats_servers: NatsServers, start: Start) -> None:
    a = await start("a", 1)
    b = await start("b", 2)
    await eventually(lambda: _holds(lambda: set(a.alive()) == {"a", "b"} and "a" in b.alive()), timeout=10,
                     what="both nodes alive")
    client = await connect(nats_servers.urls, "probe")
    try:
        info = await client.jetstream().stream_info(f"KV_{CLUSTER_BUCKET}")
    finally:
        await close(client)
    assert info.cluster is not None and info.cluster.leader is not None
    nats_servers.kill(nats_servers.index(info.cluster.leader))
    deadline = time.monotonic() + 9.0  # an election (4-8 s), and longer than dead_after_s (4 s)
    while time.monotonic() < deadline:
        assert set(a.alive()) == {"a", "b"} and set(b.alive()) == {"a", "b"}
        await asyncio.sleep(0.1)


async def test_node_numbers_are_unique_and_kept_across_restarts(nats_servers: NatsServers) -> None:
    async def numbers(*names: str) -> list[int]:
        client = await connect(nats_servers.urls, "numbers")
        try:
            kv = (await NatsChangelog.open(client)).cluster
            return list(await asyncio.gather(*(node_number(kv, name) for name in names)))
        finally:
            await close(client)

    first = await numbers("a", "b", "c")
    assert sorted(first) == [1, 2, 3]
    assert await numbers("c", "a", "b") == [first[2], first[0], first[1]]  # a new process, the same numbers
    assert await numbers("d") == [4]
    with pytest.raises(ValueError, match="node name"):
        await numbers("a.b")
