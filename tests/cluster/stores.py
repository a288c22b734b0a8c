"""Stores as data, for comparing replicas: every database but ``meta`` (each store's own marks),
and the whole log replayed into an empty store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import lmdb

from sidecar.cluster.follower import Follower
from sidecar.cluster.nats_log import NatsChangelog, close, connect
from sidecar.store import Store
from sidecar.store.environment import DATABASES


def contents(path: Path) -> dict[str, dict[bytes, bytes]]:
    """The data of the (closed) store at ``path``, as plain dicts."""
    env = lmdb.open(str(path), max_dbs=len(DATABASES) + 1, readonly=True, lock=False)
    try:
        found = {}
        with env.begin() as txn:
            for name in DATABASES:
                if name != "meta":
                    db = env.open_db(name.encode(), txn=txn, create=False)
                    found[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
        return found
    finally:
        env.close()


async def replay(urls: list[str], into: Path) -> None:
    """Apply the whole log, as a new node's follower would, to an empty store at ``into``."""
    client = await connect(urls, "replay")
    try:
        changelog = await NatsChangelog.open(client)
        partitions = await changelog.partition_count(0)
        store = Store(into, durability="none")
        store.partition_count(partitions)
        await store.start()
        problems: list[str] = []
        follower = Follower(log=changelog, store=store, writer=store.writer, partitions=partitions,
                            owns=lambda _: False, on_stop=problems.append)
        follower.start()
        await follower.reached(await changelog.tail())
        await follower.close()
        await store.close()
        assert not problems, problems
    finally:
        await close(client)


async def log_tail(urls: list[str]) -> int:
    """The sequence of the log's last record."""
    return await _ask(urls, lambda changelog: changelog.tail())


async def first_sequence(urls: list[str]) -> int:
    """The sequence from which on the log keeps every record."""
    return await _ask(urls, lambda changelog: changelog.first())


async def _ask(urls: list[str], question: Callable[[NatsChangelog], Awaitable[int]]) -> int:
    client = await connect(urls, "test")
    try:
        return await question(await NatsChangelog.open(client))
    finally:
        await close(client)
