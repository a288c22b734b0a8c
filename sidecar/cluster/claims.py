"""Who takes which partition, and how a claim is made to count.

The assignment table (``membership.py``) says who should serve a partition; the log decides whose
writes count. A node takes a partition that is unassigned or whose node stopped heartbeating, if
it is the partition's preferred node among those alive (rendezvous hashing: every node computes
the same answer from the same table, and when a node leaves only its partitions move, spread
evenly over the others). It then claims it in the log: an empty record appended once its store
holds every record before it, which moves the partition's last sequence past anything the
previous owner's appends still expect.
"""

from __future__ import annotations

import hashlib

import msgspec

from .changelog import Changelog, Fenced, LogRecord, encode_record
from .follower import Follower


def preferred(partition: int, names: list[str]) -> str:
    """The node that should take ``partition`` among ``names`` (rendezvous hashing: when a node
    leaves, only its partitions move, spread evenly over the others)."""
    return max(names, key=lambda name: hashlib.blake2b(f"{partition}/{name}".encode(), digest_size=8).digest())


class Plan(msgspec.Struct, frozen=True):
    """What this node should serve now: the partitions it holds and those it should take."""

    keep: frozenset[int]
    take: dict[int, str | None]


def plan(me: str, partitions: int, assignments: dict[int, str], alive: list[str]) -> Plan:
    keep = frozenset(p for p, owner in assignments.items() if owner == me)
    take: dict[int, str | None] = {}
    for partition in range(partitions):
        owner = assignments.get(partition)
        if owner == me or (owner is not None and owner in alive):
            continue
        if preferred(partition, alive) == me:
            take[partition] = owner
    return Plan(keep=keep, take=take)


async def fence(changelog: Changelog, follower: Follower, partition: int, node: str, token: str) -> int:
    """Claim ``partition`` in the log once this store holds all of it: the claim's sequence, past
    which the previous owner's appends (which expect an older one) are refused."""
    for attempt in range(20):
        last = await changelog.last_sequence(partition)
        await follower.reached(last)
        claim = encode_record(LogRecord(partition=partition, node=node, batches=[]))
        try:
            return await changelog.append(partition, claim, expected=last,
                                          message_id=f"claim.{token}.{partition}.{attempt}")
        except Fenced:  # the previous owner appended meanwhile: catch up with that too
            continue
    raise Fenced(f"partition {partition}: the previous owner kept appending")
