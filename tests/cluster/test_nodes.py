"""Three sidecar nodes on three NATS servers: any node serves any key, and a node's death hands
its partitions to the others within seconds without losing an acknowledged add."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.cluster.nats_servers import NatsServers
from tests.procs import eventually

from .nodes import Node, Nodes
from .stores import first_sequence

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def nodes(tmp_path: Path, nats_servers: NatsServers, http: aiohttp.ClientSession,
                request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    running = Nodes(tmp_path, http, nats_servers.urls)
    try:
        await running.start()
        yield running
    finally:
        running.stop()
        print(running.logs())  # shown when the test fails


async def _owners(nodes: Nodes, node: Node) -> dict[int, str]:
    view = await nodes.view(node)
    return {p: n["name"] for n in view["nodes"] for p in n["partitions"]}


async def test_every_node_serves_every_key_and_the_partitions_are_shared(nodes: Nodes) -> None:
    async def all_owned() -> bool:
        view = await nodes.view(nodes.nodes[0])
        return sum(len(n["partitions"]) for n in view["nodes"] if n["alive"]) == view["partitions"]
    await eventually(all_owned, timeout=30, what="every partition owned by a live node")
    owners = await _owners(nodes, nodes.nodes[0])
    assert len(set(owners.values())) == 3, f"nodes started together share the partitions: {owners}"
    for round_number in range(3):
        for key in ("alice", "bob", "carol", "dave"):
            entry = nodes.nodes[(round_number + len(key)) % 3]
            status, total = await nodes.call(entry, f"Counter/{key}/add", 1)
            assert status == 200, total
            assert total == round_number + 1


async def test_a_killed_nodes_partitions_are_served_again_with_nothing_lost(nodes: Nodes) -> None:
    survivor = nodes.nodes[0]
    for key in (f"k{i}" for i in range(12)):
        assert (await nodes.call(survivor, f"Counter/{key}/add", 5))[0] == 200
    owners = await _owners(nodes, survivor)
    victim = nodes.nodes[2]
    lost = sorted(p for p, name in owners.items() if name == victim.name)
    assert lost, owners
    victim.kill()

    async def taken_over() -> bool:
        now = await _owners(nodes, survivor)
        return all(now.get(p) in (nodes.nodes[0].name, nodes.nodes[1].name) for p in lost)
    await eventually(taken_over, timeout=20, what=f"partitions {lost} owned by a live node")
    for key in (f"k{i}" for i in range(12)):
        async def added(key: str = key) -> object:
            status, total = await nodes.call(survivor, f"Counter/{key}/add", 1,
                                             headers={"idempotency-key": f"after-{key}"})
            return total if status == 200 else None
        assert await eventually(added, timeout=15, what=f"{key} served again") == 6
    assert victim.killed_at is not None
    print(f"failover: all of {victim.name}'s partitions served again {time.monotonic() - victim.killed_at:.1f} s "
          "after its SIGKILL")


async def test_a_new_node_starts_from_a_snapshot_once_the_log_is_trimmed(
        tmp_path: Path, nats_servers: NatsServers, http: aiohttp.ClientSession) -> None:
    running = Nodes(tmp_path, http, nats_servers.urls, count=3, env={"SIDECAR_SNAPSHOT_INTERVAL_S": "1"})
    first, second, latecomer = running.nodes
    try:
        running.handlers.start()
        for node in (first, second):
            node.process.start()
        for node in (first, second):
            await running.until_serving(node)
        for key in (f"s{i}" for i in range(10)):
            assert (await running.call(first, f"Counter/{key}/add", 3))[0] == 200

        async def trimmed() -> bool:
            return await first_sequence(nats_servers.urls) > 1
        await eventually(trimmed, timeout=30, what="the log trimmed below both nodes' snapshots")
        for key in (f"s{i}" for i in range(10)):  # and more since, in the tail
            assert (await running.call(second, f"Counter/{key}/add", 1))[0] == 200
        latecomer.process.start()
        await running.until_serving(latecomer)
        assert "restored the store from a snapshot" in latecomer.process.log_path.read_text()
        for key in (f"s{i}" for i in range(10)):
            status, total = await running.call(latecomer, f"Counter/{key}/add", 1)
            assert (status, total) == (200, 5)
    finally:
        running.stop()
        print(running.logs())


async def test_garbage_on_the_mesh_port_stops_nothing(nodes: Nodes) -> None:
    target = nodes.nodes[1]
    host, port = target.mesh.rsplit(":", 1)
    payloads = [b"\x00\x00\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00\x00\x03\x93\x01\x02",
                bytes(range(256)) * 4, b"\x00\x00\x00\x08\x92\xa5Bogus\xc0"]
    for payload in payloads:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(payload)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    for key in ("m1", "m2", "m3"):
        for entry in nodes.nodes:
            status, _ = await nodes.call(entry, f"Counter/{key}/add", 1)
            assert status == 200
    assert target.process.running
