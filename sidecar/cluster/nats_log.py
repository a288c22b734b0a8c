"""The :class:`~sidecar.cluster.changelog.Changelog` on NATS JetStream.

One stream, ``SIDECAR_LOG``, holds every partition's records on its own subject
(``sidecar.log.<partition>``): one stream sequence orders the whole log, so a standby follows
every partition with one consumer, and ``Nats-Expected-Last-Subject-Sequence`` fences each
partition on its own. The stream is file-stored with up to 3 replicas (a record is acknowledged
once a majority synced it: see ``nats_config.py`` for ``sync_interval: always``) and never
expires anything by age: records leave only through :meth:`NatsChangelog.trim`, once a snapshot
holds them.

Two nats-py behaviours shape the code: ``publish_async`` never resolves when the server answers
with an API error (nats.py issue 985), so appends use the awaited ``js.publish``; and during a
leader election publishes fail at once with "no responders" while info calls time out, so every
request is retried within a bound (``nats_retry.py``), an append with the same ``Nats-Msg-Id``,
which makes a retry of an append that was in fact stored answer with the first one's sequence.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from urllib.parse import ParseResult

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from .changelog import Entry, Fenced, LogUnavailable, RecordTooLarge
from .nats_follow import follow
from .nats_retry import ATTEMPT_TIMEOUT_S, Settling, retrying

log = logging.getLogger(__name__)

STREAM = "SIDECAR_LOG"
SUBJECT_PREFIX = "sidecar.log."
SNAPSHOT_BUCKET = "sidecar-snapshots"
#: Node heartbeats, partition owners, node numbers and the partition count (``membership.py``).
CLUSTER_BUCKET = "sidecar-cluster"
#: A retried append is recognised by its message ID for this long after the first attempt:
#: far longer than any retry lasts (``retry_for``), short enough to keep the server's ID table small.
DUPLICATE_WINDOW_S = 120.0
#: JetStream's "wrong last sequence": ``Nats-Expected-Last-Subject-Sequence`` did not match
#: (10071 names the sequence found; newer servers answer 10164, without it).
WRONG_LAST_SEQUENCE = (10071, 10164)
#: The object header that holds a snapshot's log sequence.
SNAPSHOT_SEQUENCE_HEADER = "Sidecar-Sequence"
_PARTITION_COUNT_KEY = "partitions"
#: Below this sequence the log may have been trimmed (a store that has not reached it restores a snapshot).
_TRIMMED_KEY = "trimmed"
#: Room left in a message for its headers when checking a record against the server's max_payload.
_HEADER_ROOM = 512


async def connect(urls: list[str], name: str, *, connect_timeout: float = 2.0) -> NATS:
    """A client of the NATS cluster at ``urls`` that reconnects forever (a node outlives any NATS
    outage; its requests fail meanwhile, within their bounds) and notices a silent server in a few
    seconds (pings every 2 s, two unanswered: reconnect elsewhere). While none of ``urls``
    answers at start it keeps trying (a node started before its NATS servers waits for them),
    saying so once."""

    reported = False  # one line per outage, not one per reconnect attempt
    #: Bound once connected: nats-py calls ``error_cb`` during the first connect too (a server of
    #: ``urls`` that refuses), before ``nats.connect`` has returned the client.
    client: NATS | None = None

    async def on_error(exc: Exception) -> None:
        nonlocal reported
        reconnecting = client is None or client.is_reconnecting  # None: still the first connect
        if not (reported and reconnecting):
            log.warning("NATS: %s", exc or type(exc).__name__)
            reported = reconnecting

    async def on_disconnect() -> None:
        nonlocal reported
        if client is not None and not client.is_closed and not reported:  # not our own close
            log.warning("NATS: disconnected, reconnecting")
            reported = True

    async def on_reconnect() -> None:
        nonlocal reported
        reported = False
        url = client.connected_url if client is not None else None
        log.warning("NATS: reconnected to %s", url.netloc if url else "?")

    try:
        client = await nats.connect(
            servers=urls, name=name, connect_timeout=connect_timeout, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=0.25, ping_interval=2, max_outstanding_pings=2,
            error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
    except (nats.errors.NoServersError, nats.errors.TimeoutError, OSError) as exc:
        raise LogUnavailable(f"no NATS server answered at {', '.join(urls)} ({exc})") from None
    return client


async def close(client: NATS) -> None:
    """Close ``client``, even while it is reconnecting: nats-py 2.16 then tries to flush what it
    buffered meanwhile into the dead connection and raises ConnectionResetError, half closed.
    Those buffered requests have failed already (their callers timed out), so they are dropped."""
    if not client.is_connected:
        client._pending = []
        client._pending_data_size = 0
    await client.close()


def _subject(partition: int) -> str:
    return f"{SUBJECT_PREFIX}{partition}"


def _known_servers(client: NATS) -> int:
    """Servers of the cluster this client knows of: those it was given and those the cluster told it."""
    uris: list[ParseResult] = client.servers
    return len({uri.netloc for uri in uris})


class NatsChangelog:
    """The log on one JetStream stream, with its snapshot bucket and the cluster's KV bucket.
    Made by :meth:`open`, which creates what does not exist yet."""

    def __init__(self, client: NATS, js: JetStreamContext, *, snapshots: ObjectStore, cluster: KeyValue,
                 retry_for: float) -> None:
        self._client = client
        self._js = js
        self._snapshots = snapshots
        #: The ``sidecar-cluster`` KV bucket, for :class:`~sidecar.cluster.membership.Membership`.
        self.cluster = cluster
        self._retry_for = retry_for

    @classmethod
    async def open(cls, client: NATS, *, retry_for: float = 10.0, replicas: int | None = None) -> NatsChangelog:
        """The log on ``client``'s cluster, its stream and buckets created where missing with
        ``replicas`` (default: as many servers as are known, at most 3). Every request, appends
        included, is retried for up to ``retry_for`` seconds before :class:`LogUnavailable`."""
        replicas = replicas or min(3, _known_servers(client))
        js = client.jetstream(timeout=ATTEMPT_TIMEOUT_S)

        async def stream(timeout: float) -> None:
            try:
                await js.stream_info(STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(api.StreamConfig(
                    name=STREAM, subjects=[f"{SUBJECT_PREFIX}*"], storage=api.StorageType.FILE,
                    num_replicas=replicas, retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.OLD,
                    max_msgs=-1, max_bytes=-1, max_age=0, duplicate_window=DUPLICATE_WINDOW_S,
                    allow_direct=True, deny_delete=True))

        async def snapshots(timeout: float) -> ObjectStore:
            try:
                return await js.object_store(SNAPSHOT_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                return await js.create_object_store(SNAPSHOT_BUCKET, storage=api.StorageType.FILE, replicas=replicas)

        async def cluster(timeout: float) -> KeyValue:
            try:
                return await js.key_value(CLUSTER_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                return await js.create_key_value(bucket=CLUSTER_BUCKET, storage=api.StorageType.FILE,
                                                 replicas=replicas, history=1)

        await retrying(stream, within=retry_for, what=f"creating stream {STREAM}")
        return cls(client, js, snapshots=await retrying(snapshots, within=retry_for, what=f"opening {SNAPSHOT_BUCKET}"),
                   cluster=await retrying(cluster, within=retry_for, what=f"opening {CLUSTER_BUCKET}"),
                   retry_for=retry_for)

    async def append(self, partition: int, payload: bytes, *, expected: int | None, message_id: str) -> int:
        if len(payload) + _HEADER_ROOM > self._client.max_payload:
            raise RecordTooLarge(f"a {len(payload):,}-byte record exceeds the NATS servers' max_payload "
                                 f"({self._client.max_payload:,} bytes, less {_HEADER_ROOM} for headers)")
        subject = _subject(partition)

        async def publish(timeout: float) -> int:
            # Fresh headers each attempt: nats-py adds to the dict it is given.
            headers = {"Nats-Msg-Id": message_id}
            if expected is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
            try:
                ack = await self._js.publish(subject, payload, timeout=timeout, stream=STREAM, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:
                    raise Fenced(f"partition {partition}: its last record is not {expected} ({exc.description})") from None
                raise
            return ack.seq

        return await retrying(publish, within=self._retry_for, what=f"appending to partition {partition}")

    async def last_sequence(self, partition: int) -> int:
        async def last(timeout: float) -> int:
            try:
                # Not a direct get: a replica may answer those from behind the leader.
                message = await self._js.get_last_msg(STREAM, _subject(partition))
            except nats.js.errors.NotFoundError:
                return 0
            return message.seq or 0

        return await retrying(last, within=self._retry_for, what=f"reading partition {partition}'s end")

    async def tail(self) -> int:
        async def info(timeout: float) -> int:
            return (await self._js.stream_info(STREAM)).state.last_seq

        return await retrying(info, within=self._retry_for, what="reading the log's end")

    async def first(self) -> int:
        """Where the last trim left the log whole: each partition's last record stays behind
        (the fence needs it), so the stream's own first sequence says nothing of the holes."""
        async def read(timeout: float) -> int:
            try:
                return int((await self.cluster.get(_TRIMMED_KEY)).value or b"1")
            except nats.js.errors.KeyNotFoundError:
                return 1

        return await retrying(read, within=self._retry_for, what="reading where the log starts")

    async def leader(self) -> str | None:
        """The name of the NATS server that leads the stream now (for tests and diagnostics)."""
        async def info(timeout: float) -> str | None:
            cluster = (await self._js.stream_info(STREAM)).cluster
            return cluster.leader if cluster else None

        return await retrying(info, within=self._retry_for, what="reading the stream's leader")

    async def read_from(self, start: int) -> AsyncIterator[Entry]:
        """Each record from ``start`` on, exactly once and in order, through NATS restarts and
        elections (``nats_follow.py``)."""
        async for delivery in follow(self._client, self._js, STREAM, f"{SUBJECT_PREFIX}*", start=start):
            partition = delivery.subject[len(SUBJECT_PREFIX):]
            if partition.isdigit():
                yield Entry(delivery.sequence, int(partition), delivery.data)
            else:  # not ours (the stream takes any sidecar.log.* subject): never applied
                log.warning("skipping log record %d on subject %s", delivery.sequence, delivery.subject)

    async def put_snapshot(self, name: str, data: bytes, sequence: int) -> None:
        meta = api.ObjectMeta(name=name, headers={SNAPSHOT_SEQUENCE_HEADER: [str(sequence)]})

        async def put(timeout: float) -> None:
            await self._snapshots.put(name, data, meta=meta)

        await retrying(put, within=self._retry_for, what=f"storing snapshot {name}")

    async def get_snapshot(self, name: str) -> tuple[bytes, int] | None:
        async def get(timeout: float) -> tuple[bytes, int] | None:
            try:
                result = await self._snapshots.get(name)
            except nats.js.errors.ObjectNotFoundError:
                return None
            headers = result.info.headers or {}
            sequence = headers.get(SNAPSHOT_SEQUENCE_HEADER) or ["0"]
            return result.data or b"", int(sequence[0] if isinstance(sequence, list) else sequence)

        return await retrying(get, within=self._retry_for, what=f"reading snapshot {name}")

    async def trim(self, below: int) -> None:
        """Drop the records below ``below``, except each partition's last one: the fence compares
        an append's expected sequence with it, and a partition without one would take only an
        append expecting 0, refusing its owner's next commit as if another node had taken it."""
        async def subjects(timeout: float) -> list[str]:
            state = (await self._js.stream_info(STREAM, subjects_filter=f"{SUBJECT_PREFIX}*")).state
            return sorted(state.subjects or {})

        async def purge(subject: str) -> None:
            async def last(timeout: float) -> int:
                return (await self._js.get_last_msg(STREAM, subject)).seq or 0

            async def below_on(timeout: float) -> None:
                await self._js.purge_stream(STREAM, subject=subject, seq=keep)

            keep = min(below, await retrying(last, within=self._retry_for, what=f"reading {subject}'s end"))
            if keep > 1:
                await retrying(below_on, within=self._retry_for, what=f"trimming {subject} below {keep}")

        async def mark(timeout: float) -> None:  # before any record goes: a reader must know first
            if below > await self.first():
                await self.cluster.put(_TRIMMED_KEY, str(below).encode())

        await retrying(mark, within=self._retry_for, what="marking the log's new start")
        for subject in await retrying(subjects, within=self._retry_for, what="listing the log's partitions"):
            await purge(subject)

    async def partition_count(self, default: int) -> int:
        """The cluster's partition count: ``default`` if this is the first node to ask, else what
        the first one stored (a KV ``create``: of two first nodes at once, one wins)."""
        async def create_or_read(timeout: float) -> int:
            try:
                await self.cluster.create(_PARTITION_COUNT_KEY, str(default).encode())
                return default
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                pass  # taken (nats-py's create reads the key back, and may not find it yet)
            try:
                entry = await self.cluster.get(_PARTITION_COUNT_KEY)
            except nats.js.errors.KeyNotFoundError:
                raise Settling(_PARTITION_COUNT_KEY) from None
            return int(entry.value or b"0")

        return await retrying(create_or_read, within=self._retry_for, what="reading the partition count")
