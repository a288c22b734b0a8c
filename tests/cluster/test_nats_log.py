"""The Changelog on real nats-servers: the fence, deduplication of retried appends, following the
log through a SIGKILL of the stream's leader, snapshots, trimming and the partition count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from sidecar.cluster.changelog import Entry, Fenced, LogUnavailable, RecordTooLarge
from sidecar.cluster.nats_log import NatsChangelog, close, connect
from sidecar.cluster.nats_servers import NatsServers
from tests.procs import eventually


@pytest.fixture
async def client(nats_servers: NatsServers) -> AsyncIterator[NATS]:
    client = await connect(nats_servers.urls, "test")
    yield client
    await close(client)


@pytest.fixture
async def changelog(client: NATS) -> NatsChangelog:
    return await NatsChangelog.open(client)


async def test_the_fence_refuses_a_stale_or_future_expected_sequence(changelog: NatsChangelog) -> None:
    first = await changelog.append(0, b"a", expected=0, message_id="a")
    assert await changelog.append(0, b"b", expected=first, message_id="b") == first + 1
    with pytest.raises(Fenced):
        await changelog.append(0, b"stale", expected=first, message_id="stale")
    with pytest.raises(Fenced):
        await changelog.append(0, b"future", expected=first + 5, message_id="future")
    with pytest.raises(Fenced):
        await changelog.append(0, b"claims none", expected=0, message_id="none")
    # Partitions are fenced apart: another one's first record expects 0.
    assert await changelog.append(1, b"c", expected=0, message_id="c") == first + 2
    assert (await changelog.last_sequence(0), await changelog.last_sequence(1)) == (first + 1, first + 2)
    assert await changelog.last_sequence(2) == 0 and await changelog.tail() == first + 2


async def test_a_retried_append_answers_with_the_first_ones_sequence(changelog: NatsChangelog) -> None:
    stored = await changelog.append(3, b"once", expected=0, message_id="batch-1")
    # The retry of an append whose acknowledgement was lost: the same ID and expected sequence.
    assert await changelog.append(3, b"once", expected=0, message_id="batch-1") == stored
    assert await changelog.last_sequence(3) == stored and await changelog.tail() == stored
    # Within the window the ID wins over the fence: a late retry still learns its record was stored.
    after = await changelog.append(3, b"next", expected=stored, message_id="batch-2")
    assert await changelog.append(3, b"once", expected=0, message_id="batch-1") == stored
    assert await changelog.tail() == after


async def _collect(changelog: NatsChangelog, start: int, into: list[Entry]) -> None:
    async for entry in changelog.read_from(start):
        into.append(entry)


async def _append_chain(changelog: NatsChangelog, partition: int, payloads: list[bytes]) -> list[int]:
    sequences = []
    for payload in payloads:
        expected = await changelog.last_sequence(partition)
        sequences.append(await changelog.append(partition, payload, expected=expected, message_id=payload.decode()))
    return sequences


async def test_read_from_yields_the_log_in_order_then_follows_new_appends(changelog: NatsChangelog) -> None:
    await _append_chain(changelog, 0, [b"p0-1", b"p0-2"])
    await _append_chain(changelog, 5, [b"p5-1"])
    seen: list[Entry] = []
    reader = asyncio.create_task(_collect(changelog, 2, seen))
    try:
        await eventually(lambda: _async(len(seen) == 2), timeout=10, what="the records from 2 on")
        assert seen == [Entry(2, 0, b"p0-2"), Entry(3, 5, b"p5-1")]
        started = time.monotonic()
        await _append_chain(changelog, 5, [b"p5-2"])
        await eventually(lambda: _async(len(seen) == 3), timeout=10, what="the new append")
        assert seen[2] == Entry(4, 5, b"p5-2") and time.monotonic() - started < 1.0
    finally:
        reader.cancel()


async def _async(value: bool) -> bool:
    return value


async def test_reading_and_appending_go_on_through_a_sigkill_of_the_streams_leader(
        nats_servers: NatsServers, client: NATS) -> None:
    changelog = await NatsChangelog.open(client, retry_for=20.0)
    before = [f"before-{i}".encode() for i in range(5)]
    after = [f"after-{i}".encode() for i in range(5)]
    await _append_chain(changelog, 7, before)
    seen: list[Entry] = []
    reader = asyncio.create_task(_collect(changelog, 1, seen))
    try:
        await eventually(lambda: _async(len(seen) == 5), timeout=10, what="the first records")
        leader = await changelog.leader()
        assert leader is not None
        nats_servers.kill(nats_servers.index(leader))
        started = time.monotonic()
        # The first append meets the election ("no responders", timeouts) and is retried until it lands.
        last = await changelog.append(7, after[0], expected=5, message_id="after-0")
        assert last == 6 and time.monotonic() - started < 20.0
        await _append_chain(changelog, 7, after[1:])
        assert await changelog.leader() not in (None, leader)
        await eventually(lambda: _async(len(seen) >= 10), timeout=20, what="the records appended after the kill")
        assert [e.sequence for e in seen] == list(range(1, 11))  # nothing skipped, nothing twice
        assert [e.payload for e in seen] == before + after

        # Back on its ports and store, the killed server catches up: with the new leader killed in
        # turn, it is half of the quorum that takes the next append.
        await nats_servers.restart(nats_servers.index(leader))
        second = await changelog.leader()
        assert second is not None and second != leader
        nats_servers.kill(nats_servers.index(second))
        assert await changelog.append(7, b"last", expected=10, message_id="last") == 11
        await eventually(lambda: _async(len(seen) >= 11), timeout=20, what="the record appended after the second kill")
        assert [e.sequence for e in seen] == list(range(1, 12)) and seen[-1].payload == b"last"
    finally:
        reader.cancel()


async def test_appends_fail_with_log_unavailable_when_no_server_answers(nats_servers: NatsServers, client: NATS) -> None:
    changelog = await NatsChangelog.open(client, retry_for=1.5)
    await changelog.append(0, b"x", expected=0, message_id="x")
    for i in range(3):
        nats_servers.kill(i)
    started = time.monotonic()
    with pytest.raises(LogUnavailable):
        await changelog.append(0, b"y", expected=1, message_id="y")
    with pytest.raises(LogUnavailable):
        await changelog.last_sequence(0)
    assert time.monotonic() - started < 8.0


async def test_a_record_larger_than_the_servers_take_is_refused_before_sending(changelog: NatsChangelog) -> None:
    with pytest.raises(RecordTooLarge, match="max_payload"):
        await changelog.append(0, b"x" * (8 * 1024 * 1024), expected=0, message_id="big")
    assert await changelog.tail() == 0


async def test_snapshots_round_trip_and_the_log_trims_below_them(changelog: NatsChangelog) -> None:
    assert await changelog.get_snapshot("partition-0") is None
    await _append_chain(changelog, 0, [b"1", b"2", b"3"])
    data = bytes(range(256)) * 1024  # several object-store chunks
    await changelog.put_snapshot("partition-0", data, 2)
    assert await changelog.get_snapshot("partition-0") == (data, 2)
    await changelog.put_snapshot("partition-0", b"newer", 3)  # replaces the older one
    assert await changelog.get_snapshot("partition-0") == (b"newer", 3)

    await _append_chain(changelog, 1, [b"quiet"])  # 4: partition 1's only record
    await _append_chain(changelog, 0, [b"5"])
    await changelog.trim(5)
    seen: list[Entry] = []
    reader = asyncio.create_task(_collect(changelog, 1, seen))
    try:
        await eventually(lambda: _async(len(seen) == 2), timeout=10, what="what is left after the trim")
        assert seen == [Entry(4, 1, b"quiet"), Entry(5, 0, b"5")]  # a partition's last record stays
    finally:
        reader.cancel()
    assert await changelog.last_sequence(0) == 5 and await changelog.last_sequence(1) == 4
    assert await changelog.append(1, b"after", expected=4, message_id="after") == 6  # still fenced right


async def test_the_first_node_fixes_the_partition_count(nats_servers: NatsServers, changelog: NatsChangelog) -> None:
    other = await connect(nats_servers.urls, "other")
    try:
        second = await NatsChangelog.open(other)
        counts = await asyncio.gather(changelog.partition_count(8), second.partition_count(16))
        assert counts[0] == counts[1] and counts[0] in (8, 16)
        assert await changelog.partition_count(32) == counts[0]
    finally:
        await close(other)


async def test_opening_waits_for_a_server_that_the_replicas_need(nats_servers: NatsServers) -> None:
    """A first node started while one of three servers is down (or not yet counted online) opens
    the log once the server is back, within its retry bound, instead of exiting."""
    nats_servers.kill(2)
    client = await connect(nats_servers.urls[:2], "early")
    try:
        opening = asyncio.ensure_future(NatsChangelog.open(client, retry_for=45.0, replicas=3))
        await asyncio.sleep(0.5)
        assert not opening.done()  # the stream needs 3 servers: it waits, it does not fail
        await nats_servers.restart(2)
        changelog = await asyncio.wait_for(opening, timeout=60)
        assert await changelog.append(0, b"first", expected=0, message_id="first") >= 1
        info = await client.jetstream().stream_info("SIDECAR_LOG")
        assert info.config.num_replicas == 3
    finally:
        await close(client)
