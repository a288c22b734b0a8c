"""Replication on real nats-servers and real LMDB stores, without a sidecar around them: what an
owner commits reaches a standby's store, a standby that claims the partition fences the old owner
(whose next write fails, so it acknowledges nothing more), and the log replayed into an empty
store gives the owner's data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from sidecar.cluster.commits import ReplicatedCommits
from sidecar.cluster.follower import Follower
from sidecar.cluster.nats_log import NatsChangelog, close, connect
from sidecar.cluster.nats_servers import NatsServers
from sidecar.cluster.claims import fence
from sidecar.store import Changes, Store, StoreError
from tests.cluster.stores import contents

PARTITIONS = 4


@pytest.fixture
async def changelog(nats_servers: NatsServers) -> AsyncIterator[NatsChangelog]:
    client: NATS = await connect(nats_servers.urls, "test")
    yield await NatsChangelog.open(client)
    await close(client)


class Replica:
    """A store, its follower, and (once it claims) its commit path: one node's storage."""

    def __init__(self, name: str, path: Path, changelog: NatsChangelog) -> None:
        self.name, self.path, self.changelog = name, path, changelog
        self.store = Store(path, durability="none")
        self.store.partition_count(PARTITIONS)
        self.owned: dict[int, int] = {}
        self.stopped: list[str] = []
        self.follower: Follower | None = None  # None once closed
        self.commits: ReplicatedCommits | None = None

    async def start(self) -> None:
        await self.store.start()
        self.follower = Follower(log=self.changelog, store=self.store, writer=self.store.writer,
                                 partitions=PARTITIONS, owns=lambda p: p in self.owned, on_stop=self.stopped.append)
        self.follower.start()

    async def claim(self, *partitions: int) -> None:
        assert self.follower is not None
        for partition in partitions:
            self.owned[partition] = await fence(self.changelog, self.follower, partition, self.name, self.name)
        self.commits = ReplicatedCommits(log=self.changelog, writer=self.store.writer, node=self.name,
                                         partitions=PARTITIONS, owned=self.owned, on_stop=self.stopped.append,
                                         shared_applied=self.follower.reached)
        self.store.replicate(self.commits)

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.close()
            self.follower = None
            await self.store.close()


@pytest.fixture
async def replicas(tmp_path: Path, changelog: NatsChangelog) -> AsyncIterator[list[Replica]]:
    made = [Replica(name, tmp_path / name, changelog) for name in ("a", "b")]
    for replica in made:
        await replica.start()
    yield made
    for replica in made:
        await replica.close()


def _state_write(key: str, value: bytes) -> Changes:
    changes = Changes()
    changes.set_state("Counter", key, "count", value)
    return changes


def _key_in(partition: int) -> str:
    from sidecar.process.partitions import PartitionMap
    partitions = PartitionMap.single(PARTITIONS)
    return next(k for k in (f"key{i}" for i in range(1000)) if partitions.of_key("Counter", k) == partition)


async def test_what_the_owner_commits_reaches_the_standby_and_a_replay(replicas: list[Replica], tmp_path: Path,
                                                                         changelog: NatsChangelog) -> None:
    owner, standby = replicas
    await owner.claim(0, 1, 2, 3)
    writes = [owner.store.submit(_state_write(_key_in(n % PARTITIONS), str(n).encode())) for n in range(40)]
    await asyncio.gather(*writes)
    assert owner.store.read_state("Counter", _key_in(3)) == {"count": b"39"}
    assert standby.follower is not None
    await standby.follower.reached(await changelog.tail())
    assert standby.store.read_state("Counter", _key_in(3)) == {"count": b"39"}

    fresh = Replica("fresh", tmp_path / "fresh", changelog)
    await fresh.start()
    assert fresh.follower is not None
    await fresh.follower.reached(await changelog.tail())
    for replica in (fresh, owner, standby):
        await replica.close()
    assert contents(tmp_path / "fresh") == contents(tmp_path / "a") == contents(tmp_path / "b")


async def test_a_claim_fences_the_old_owner_which_acknowledges_nothing_more(replicas: list[Replica]) -> None:
    old, new = replicas
    await old.claim(2)
    key = _key_in(2)
    await old.store.submit(_state_write(key, b"1"))
    await new.claim(2)  # the old owner is paused or cut off: it does not know yet
    with pytest.raises(StoreError):
        await old.store.submit(_state_write(key, b"stale"))
    assert old.stopped, "a fenced owner stops"
    with pytest.raises(StoreError):  # and every later write fails at once
        await old.store.submit(_state_write(key, b"later"))
    await new.store.submit(_state_write(key, b"2"))
    assert new.store.read_state("Counter", key) == {"count": b"2"}
    assert old.follower is not None
    assert new.store.read_state("Counter", key) != {"count": b"stale"}


async def test_a_batch_for_a_partition_not_claimed_fails_and_nothing_is_logged(replicas: list[Replica],
                                                                              changelog: NatsChangelog) -> None:
    owner, _ = replicas
    await owner.claim(0)
    before = await changelog.tail()
    with pytest.raises(StoreError, match="not served by this node"):
        await owner.store.submit(_state_write(_key_in(1), b"x"))
    assert await changelog.tail() == before
