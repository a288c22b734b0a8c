"""Snapshots and trimming: the log stays as long as the slowest node needs, and a node that
starts empty (or finds the log trimmed past its store) begins from a snapshot plus the tail.

A snapshot is this node's store, copied compacted (``sidecar backup``'s copy: one read
transaction, the writer never paused) right after a **checkpoint**: the highest sequence up to
which every record of every partition is applied here (the follower's position, lowered to the
last applied record of each partition this node owns), with every partition's ``applied`` mark
raised to it. Every node holds every partition, so any node's snapshot starts any other. Each
node keeps its newest snapshot in the log's object store under its name, and trims the log below
the lowest checkpoint of the snapshots there: a node whose store is older than that restores a
snapshot first.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

from ..store import Store
from .changelog import Changelog
from .commits import ReplicatedCommits
from .follower import Follower

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "store."


def checkpoint_sequence(follower: Follower, commits: ReplicatedCommits | None) -> int:
    """How far every partition's records are applied here."""
    return follower.position if commits is None else commits.settled_below(follower.position)


async def take_snapshot(*, node: str, store: Store, changelog: Changelog, follower: Follower,
                        commits: ReplicatedCommits | None) -> int:
    """Checkpoint, copy the store, keep the copy as this node's snapshot; its sequence."""
    sequence = checkpoint_sequence(follower, commits)
    await follower.checkpoint(sequence, commits.handed if commits is not None else {})
    staging = Path(tempfile.mkdtemp(prefix="sidecar-snapshot-"))
    try:
        copy = staging / "store"
        await asyncio.to_thread(store.copy_to, copy)  # one read transaction: the writer goes on
        data = await asyncio.to_thread((copy / "data.mdb").read_bytes)
        await changelog.put_snapshot(SNAPSHOT_PREFIX + node, data, sequence)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("snapshot of %s at sequence %d", node, sequence)
    return sequence


async def restore_snapshot(*, data_dir: str, changelog: Changelog, names: list[str]) -> int | None:
    """Replace the store in ``data_dir`` with the newest of the nodes' snapshots; its sequence
    (``None``: there is none)."""
    newest: tuple[bytes, int] | None = None
    for name in names:
        found = await changelog.get_snapshot(SNAPSHOT_PREFIX + name)
        if found is not None and (newest is None or found[1] > newest[1]):
            newest = found
    if newest is None:
        return None
    data, sequence = newest
    target = Path(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    staging = target / "data.mdb.restoring"
    staging.write_bytes(data)
    (target / "lock.mdb").unlink(missing_ok=True)
    staging.rename(target / "data.mdb")
    log.info("restored the store from a snapshot at sequence %d", sequence)
    return sequence
