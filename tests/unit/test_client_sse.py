"""The client's SSE parser: the standard's rules, and the sidecar's own streams read back the
same however the network cuts them into chunks."""

from __future__ import annotations

import msgspec
from hypothesis import given, strategies as st

from handler_sdk.client._events import End, Milestone, Token, _event
from handler_sdk.client._sse import Message, SSEParser
from handler_sdk.protocol import Failure
from sidecar.http.event_stream import sse
from sidecar.invoker.events import EventPage, StreamEnd, StreamEvent


def _parse(*chunks: bytes, last_id: str | None = None) -> list[Message]:
    parser = SSEParser(last_id)
    return [message for chunk in chunks for message in parser.feed(chunk)]


def test_the_standards_rules() -> None:
    assert _parse(b"data: a\ndata:b\n\n") == [Message("message", "a\nb", None)]  # one space stripped, lines joined
    assert _parse(b"data:  two spaces\n\n") == [Message("message", " two spaces", None)]
    assert _parse(b": a comment\n\nevent: x\n\n") == []  # no data: nothing dispatched
    assert _parse(b"id: 3\nevent: token\ndata: 1\n\nevent: end\ndata: 2\n\n") == [
        Message("token", "1", "3"), Message("end", "2", "3")]  # the ID persists
    assert _parse(b"id: a\0b\ndata: 1\n\n", last_id="7") == [Message("message", "1", "7")]  # NUL: ignored
    assert _parse(b"retry: 10\nfoo: bar\ndata\n\n") == [Message("message", "", None)]
    for ending in (b"\r\n", b"\r", b"\n"):
        assert _parse(b"id: 1" + ending + b"data: x" + ending + ending) == [Message("message", "x", "1")]
    # A CR at a chunk's end may be half of a CRLF: it is not taken as two line ends.
    assert _parse(b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n") == [Message("message", "x", None),
                                                                  Message("message", "y", None)]
    assert _parse(b"data: caf\xc3", b"\xa9\n\n") == [Message("message", "café", None)]
    long = "x" * 300_000  # past aiohttp's line limit
    assert _parse(f"data: {long}\n\n".encode()) == [Message("message", long, None)]


def test_the_sidecars_events_become_typed_events() -> None:
    assert _event(Message("milestone", '{"stage": "a"}', "1"), "inv") == Milestone("1", {"stage": "a"})
    assert _event(Message("token", '"hi"', "1.0"), "inv") == Token("1.0", "hi")
    assert _event(Message("end", '{"status": "failed", "output": null, "failure": {"code": 500, "message": "no"}}',
                          "1"), "inv") == End("failed", None, Failure(500, "no"))
    assert _event(Message("someday", "1", "2"), "inv") is None  # a newer sidecar's kind: skipped


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                     max_leaves=8)
_pages = st.builds(
    EventPage,
    events=st.lists(st.builds(lambda index, seq, data: StreamEvent(f"{index}" if seq is None else f"{index}.{seq}",
                                                                   msgspec.Raw(msgspec.json.encode(data))),
                              st.integers(0, 10**6), st.none() | st.integers(0, 2**31 - 1), _json), max_size=8),
    end=st.none() | st.builds(lambda output: StreamEnd("completed", msgspec.Raw(msgspec.json.encode(output))), _json),
)


@given(_pages, st.lists(st.integers(1, 64), max_size=40))
def test_a_page_reads_back_the_same_however_it_is_chunked(page: EventPage, cuts: list[int]) -> None:
    wire = sse(page) + b": waiting\n\n"
    chunks, at = [], 0
    for size in cuts:
        chunks.append(wire[at:at + size])
        at += size
    chunks.append(wire[at:])
    events = [_event(message, "inv") for message in _parse(*chunks)]
    expected: list[object] = [
        (Token if "." in e.id else Milestone)(e.id, msgspec.json.decode(bytes(e.data))) for e in page.events]
    if page.end is not None:
        expected.append(End(page.end.status, msgspec.json.decode(bytes(page.end.output))))
    # A warning's place (N.2147483647) is a token's shape; the sidecar names it "warning".
    assert [type(e).__name__ if type(e).__name__ != "GrowthWarning" else "Token" for e in events] == \
        [type(e).__name__ for e in expected]
    assert [getattr(e, "data", None) for e in events] == [getattr(e, "data", None) for e in expected]


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_any_bytes_at_all_parse_without_an_error(chunks: list[bytes]) -> None:
    for message in _parse(*chunks):
        assert isinstance(message.event, str) and isinstance(message.data, str)
