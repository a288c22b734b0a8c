"""The sidecar's event streams in memory: places, ordering, repeats and bounds."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from handler_sdk.protocol import Entry, Input, Publish, Run
from sidecar.invoker import events
from sidecar.http.event_stream import sse
from sidecar.invoker.events import EventPage, EventStreams, Place, StreamEnd, StreamEvent, milestones


def test_places_parse_print_and_order() -> None:
    assert Place.parse("7") == Place(7, -1) and str(Place(7, -1)) == "7"
    assert Place.parse("7.2") == Place(7, 2) and str(Place(7, 2)) == "7.2"
    assert Place(7, -1) < Place(7, 0) < Place(7, 1) < Place(8, -1)  # a milestone, then what follows it
    for bad in ("", "x", "7.", ".2", "7.2.1", "-1"):
        with pytest.raises(ValueError):
            Place.parse(bad)


def test_milestones_are_the_publish_entries_after_a_place() -> None:
    journal = [Input(b"1"), Publish(b'"a"'), Run("step", b"2"), Publish(b'"b"')]
    assert milestones(journal, None) == [(Place(1, -1), b'"a"'), (Place(3, -1), b'"b"')]
    assert milestones(journal, Place(1, 4)) == [(Place(3, -1), b'"b"')]


async def test_buffered_events_come_in_place_order_with_the_latest_of_a_repeat() -> None:
    streams = EventStreams()
    for place, event in [(Place(1, 0), b'"a"'), (Place(1, 1), b'"b"'), (Place(1, 0), b'"a2"'), (Place(3, 0), b'"c"')]:
        streams.ephemeral("inv", place, event)
    assert streams.buffered("inv", None, None) == [(Place(1, 0), b'"a2"'), (Place(1, 1), b'"b"'), (Place(3, 0), b'"c"')]
    assert streams.buffered("inv", Place(1, 0), Place(2, -1)) == [(Place(1, 1), b'"b"')]


async def test_the_buffer_keeps_the_newest_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "KEEP", 3)
    monkeypatch.setattr(events, "KEEP_BYTES", 10)
    streams = EventStreams()
    for seq in range(5):
        streams.ephemeral("inv", Place(1, seq), b'"%d"' % seq)  # 3 bytes each
    assert [place.seq for place, _ in streams.buffered("inv", None, None)] == [2, 3, 4]
    streams.ephemeral("inv", Place(2, 0), b'"' + b"x" * 20 + b'"')  # alone over the bytes: kept alone
    assert [place for place, _ in streams.buffered("inv", None, None)] == [Place(2, 0)]


async def test_a_waiting_subscriber_wakes_on_news_or_after_its_timeout() -> None:
    streams = EventStreams()
    waiting = asyncio.ensure_future(streams.wait("inv", 30))
    # Callbacks run in order: the subscriber starts waiting, then the event comes.
    asyncio.get_running_loop().call_soon(streams.ephemeral, "inv", Place(1, 0), b"1")
    await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(streams.wait("other", 0.01), 5)  # nothing came: back after the timeout


async def test_a_running_invocations_durable_journal_is_read_once() -> None:
    journal = [Input(b"1"), Publish(b'"a"'), Run("step", b"2"), Publish(b'"b"')]
    durable = 2  # entries committed so far
    reads: list[int] = []

    def read_from(start: int) -> list[Entry]:
        reads.append(start)
        return journal[start:durable]

    streams = EventStreams()
    assert streams.durable("inv", read_from, running=True) == (2, [(Place(1, -1), b'"a"')])
    durable = 4
    assert streams.durable("inv", read_from, running=True) == (4, [(Place(1, -1), b'"a"'), (Place(3, -1), b'"b"')])
    assert reads == [0, 2]  # the second page read only what was new
    streams.finished("inv")
    assert streams.durable("inv", read_from, running=False)[0] == 4 and reads[-1] == 0  # forgotten once over



def test_milestones_tokens_and_the_end_are_told_apart_by_their_sse_event_names() -> None:
    page = EventPage(events=[StreamEvent("1", msgspec.Raw(b'{"stage":"a"}')), StreamEvent("1.0", msgspec.Raw(b'"tok"'))],
                     end=StreamEnd("completed", msgspec.Raw(b'"out"')))
    assert sse(page) == (b'id: 1\nevent: milestone\ndata: {"stage":"a"}\n\n'
                         b'id: 1.0\nevent: token\ndata: "tok"\n\n'
                         b'event: end\ndata: {"status":"completed","output":"out","failure":null}\n\n')
