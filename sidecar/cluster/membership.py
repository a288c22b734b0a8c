"""Which nodes are alive and which node should own each partition, in the cluster's KV bucket.

Each node puts a heartbeat (``alive.<name>``, its :class:`NodeInfo`) every ``heartbeat_s`` and
watches everyone's; the partition table is ``owner.<partition>`` = node name, changed only by
compare-and-set on the key's revision, so two nodes acting on the same stale view cannot both
take a partition. The table says who *should* own a partition; the log's fence decides whose
writes count, so a slow or wrong liveness judgement costs a hand-over, never a lost write.

Liveness is judged only by this process's monotonic clock (when a heartbeat was *seen*), never
by comparing two machines' clocks. And a NATS outage must not make every other node look dead:
a node is dead only when this node's own heartbeats kept coming back through the watch for
``dead_after_s`` while that node's did not. Silence is measured up to this node's last echo,
so while its own heartbeats do not come back (the watch restarting, the bucket electing a
leader) nobody's silence grows. When they come back after a gap of two intervals or more, every
node silent since before the gap is given two more intervals (a live node's heartbeat,
retried every quarter interval while it fails, is stored within about a second of the bucket's
return), never less than ``dead_after_s`` of silence in all. So a node that dies with a NATS
server is judged dead soon after the election ends, not a whole ``dead_after_s`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import msgspec
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from .nats_follow import follow
from .nats_log import CLUSTER_BUCKET
from .nats_retry import Settling, retrying
from .tasks import stop_tasks

log = logging.getLogger(__name__)

_ALIVE = "alive."
_OWNER = "owner."
#: What a node's name may be: it becomes part of KV keys (``alive.<name>``), which split on dots.
_NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A node as the others see it, in its heartbeat."""

    name: str
    #: Small, unique per name and kept across restarts (:func:`node_number`): IDs made on this node carry it.
    number: int
    #: ``host:port`` of its node-to-node listener (requests forwarded to the partition's owner).
    mesh: str
    ingress: str
    admin: str
    #: Wall-clock start time, for people reading ``GET /cluster``; never compared across nodes.
    started_ms: int


_node_encoder = msgspec.json.Encoder()
_node_decoder = msgspec.json.Decoder(NodeInfo)


def check_node_name(name: str) -> str:
    if not _NODE_NAME.fullmatch(name):
        raise ValueError(f"node name {name!r}: use 1-64 letters, digits, '_' and '-'")
    return name


async def node_number(kv: KeyValue, name: str, *, retry_for: float = 10.0) -> int:
    """``name``'s number: the one it got before, else the smallest free one from 1 (taken with a
    KV ``create`` of ``number.<n>``, so two new nodes never share one), remembered under
    ``node.<name>.number``."""
    check_node_name(name)
    remembered = f"node.{name}.number"

    async def allocate(timeout: float) -> int:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            return int((await kv.get(remembered)).value or b"0")
        number = 1
        while True:
            key = f"number.{number}"
            try:
                await kv.create(key, name.encode())
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                try:
                    holder = (await kv.get(key)).value
                except nats.js.errors.KeyNotFoundError:
                    raise Settling(key) from None  # being created by another node right now
                if holder != name.encode():  # else: ours, from a start that stopped before remembering it
                    number += 1
                    continue
            await kv.put(remembered, str(number).encode())
            return number

    return await retrying(allocate, within=retry_for, what=f"allocating node {name}'s number")


class _Owner(msgspec.Struct, frozen=True):
    node: str
    revision: int


#: How long the others wait, hearing a node's heartbeat no more, before they take its partitions.
DEAD_AFTER_S = 4.0


class Membership:
    """This node's view of the cluster: who is alive and who owns which partition. Own it from
    :meth:`start` to :meth:`close`; ``changed`` is set whenever either changes (clear it, then
    read :meth:`alive` and :meth:`assignments`)."""

    def __init__(self, client: NATS, kv: KeyValue, me: NodeInfo, *, heartbeat_s: float = 1.0,
                 dead_after_s: float = DEAD_AFTER_S, retry_for: float = 10.0, bucket: str = CLUSTER_BUCKET) -> None:
        """``kv``: the cluster's bucket (``NatsChangelog.cluster``), called ``bucket``."""
        check_node_name(me.name)
        self._client = client
        self._kv = kv
        self._bucket = bucket
        self.me = me
        self._heartbeat_s = heartbeat_s
        self._dead_after_s = dead_after_s
        #: After a gap in this node's own echoes, the least time a silent node is given (see the module).
        self._recovery_grace_s = min(dead_after_s, 2 * heartbeat_s)
        self._retry_for = retry_for
        self.changed = asyncio.Event()
        self._nodes: dict[str, NodeInfo] = {me.name: me}
        self._seen: dict[str, float] = {}
        #: When this node's own heartbeat last came back through the watch: the watch works up to here.
        self._echo: float | None = None
        self._owners: dict[int, _Owner] = {}
        self._alive_names: frozenset[str] = frozenset({me.name})
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start heartbeating and watching (returns at once; the view fills as the watch delivers)."""
        self._tasks = [asyncio.create_task(self._heartbeat(), name=f"heartbeat {self.me.name}"),
                       asyncio.create_task(self._watch(), name=f"membership watch {self.me.name}"),
                       asyncio.create_task(self._judge(), name=f"liveness {self.me.name}")]

    async def close(self) -> None:
        """Stop heartbeating and watching, and take this node's heartbeat away: the others count
        it gone at once (where that fails, after ``dead_after_s``) and take its partitions."""
        await stop_tasks(*self._tasks)
        self._tasks = []
        try:
            await asyncio.wait_for(self._kv.delete(f"{_ALIVE}{self.me.name}"), timeout=2.0)
        except Exception as exc:  # NATS unreachable: the others wait out the heartbeats instead
            log.warning("could not take %s's heartbeat away: %r", self.me.name, exc)

    def holds(self, partition: int) -> bool:
        """Whether this node owns ``partition`` as of a recent confirmation: the table names it,
        and its own heartbeat came back through the watch within ``dead_after_s`` less a beat (the
        others wait ``dead_after_s`` of silence before they take its partitions; the watch
        delivers in order, so a takeover made while this node was paused is seen before the
        heartbeat that follows it)."""
        echo = self._echo
        owner = self._owners.get(partition)
        return (echo is not None and time.monotonic() - echo < self._dead_after_s - self._heartbeat_s
                and owner is not None and owner.node == self.me.name)

    def alive(self) -> dict[str, NodeInfo]:
        """The nodes whose heartbeat this node saw recently enough, itself always included."""
        return {name: self._nodes[name] for name in sorted(self._alive_names)}

    def assignments(self) -> dict[int, str]:
        """Partition -> the node that should own it, as the table says now."""
        return {partition: owner.node for partition, owner in sorted(self._owners.items())}

    def node(self, number: int) -> NodeInfo | None:
        return next((info for info in self._nodes.values() if info.number == number), None)

    def by_name(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)

    async def claim(self, partition: int, previous: str | None) -> bool:
        """Make this node ``partition``'s owner if the table still names ``previous`` (None: no
        owner). False when someone changed it first."""
        key = f"{_OWNER}{partition}"
        me = self.me.name.encode()
        attempts = 0

        async def compare_and_set(timeout: float) -> bool:
            nonlocal attempts
            attempts += 1
            try:
                current = await self._kv.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                current = None
            value = current.value if current is not None else None
            if attempts > 1 and value == me:
                return True  # an earlier attempt took it; only its answer was lost
            if value != (previous.encode() if previous is not None else None):
                return False
            try:
                if current is None or current.revision is None:
                    revision = await self._kv.create(key, me)
                else:
                    revision = await self._kv.update(key, me, last=current.revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                return False
            self._set_owner(partition, _Owner(self.me.name, revision))
            return True

        return await retrying(compare_and_set, within=self._retry_for, what=f"claiming partition {partition}")

    async def release(self, partition: int) -> None:
        """Clear ``partition``'s owner if it is this node (for a clean hand-over at shutdown)."""
        key = f"{_OWNER}{partition}"

        async def delete(timeout: float) -> None:
            try:
                current = await self._kv.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return
            if current.value == self.me.name.encode() and current.revision is not None:
                with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                    await self._kv.delete(key, last=current.revision)

        await retrying(delete, within=self._retry_for, what=f"releasing partition {partition}")

    # --- the background tasks ----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        body = _node_encoder.encode(self.me)
        key = f"{_ALIVE}{self.me.name}"
        failing = False
        while True:
            try:
                await asyncio.wait_for(self._kv.put(key, body), timeout=max(self._heartbeat_s, 1.0))
                if failing:
                    log.warning("heartbeat of %s stored again", self.me.name)
                failing = False
            except Exception as exc:  # an election or an outage: tried again soon (see the module)
                if not failing:
                    log.warning("heartbeat of %s not stored: %r", self.me.name, exc)
                failing = True
            await asyncio.sleep(self._heartbeat_s / 4 if failing else self._heartbeat_s)

    async def _watch(self) -> None:
        stream = f"KV_{self._bucket}"
        prefix = f"$KV.{self._bucket}."
        js = self._client.jetstream()
        async for delivery in follow(self._client, js, stream, f"{prefix}>", start=1, last_per_subject=True):
            key = delivery.subject[len(prefix):]
            removed = delivery.headers.get("KV-Operation") in ("DEL", "PURGE")
            if key.startswith(_ALIVE):
                self._heard(key[len(_ALIVE):], None if removed else delivery.data)
            elif key.startswith(_OWNER) and key[len(_OWNER):].isdigit():
                partition = int(key[len(_OWNER):])
                if removed:
                    owner = self._owners.get(partition)
                    if owner is not None and owner.revision < delivery.sequence:
                        del self._owners[partition]
                        self.changed.set()
                else:
                    self._set_owner(partition, _Owner(delivery.data.decode(errors="replace"), delivery.sequence))

    def _heard(self, name: str, body: bytes | None) -> None:
        now = time.monotonic()
        if body is None:
            self._seen.pop(name, None)
            return
        try:
            info = _node_decoder.decode(body)
        except msgspec.DecodeError:
            log.warning("ignoring a heartbeat for %s that is no NodeInfo", name)
            return
        if info.name != name:
            return
        if name == self.me.name:
            if self._echo is None or now - self._echo > 2 * self._heartbeat_s:
                self._forgive(now)
            self._echo = now
            return
        if self._nodes.get(name) != info:
            self._nodes[name] = info
            self.changed.set()
        self._seen[name] = now

    def _forgive(self, now: float) -> None:
        """This node's own heartbeats were not coming back (nor, maybe, could anyone's be
        stored): every node alive before, silent since, gets two heartbeat intervals from ``now``
        (one judged dead already stays so until it is heard)."""
        floor = now - self._dead_after_s + self._recovery_grace_s
        for name in self._alive_names & self._seen.keys():
            self._seen[name] = max(self._seen[name], floor)

    def _set_owner(self, partition: int, owner: _Owner) -> None:
        current = self._owners.get(partition)
        if current is not None and current.revision >= owner.revision:
            return
        self._owners[partition] = owner
        if current is None or current.node != owner.node:
            self.changed.set()

    async def _judge(self) -> None:
        """Recompute the alive set as time passes (a node dies by staying silent)."""
        while True:
            # Until this node's own heartbeat comes back through the watch, it cannot tell silence
            # from a watch that delivers nothing: everyone it heard counts as alive.
            echo = self._echo
            alive = frozenset({self.me.name} | {
                name for name, seen in self._seen.items() if echo is None or echo - seen <= self._dead_after_s})
            if alive != self._alive_names:
                self._alive_names = alive
                self.changed.set()
            await asyncio.sleep(min(self._heartbeat_s, self._dead_after_s) / 4)
