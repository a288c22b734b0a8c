"""What a link does with a frame it cannot use: fail that attempt, or drop it, never raise."""

from __future__ import annotations

import logging

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler_sdk.protocol import End, Heartbeat, ToSidecar, encoder
from sidecar.links import Strays, addressee, deliver


class Exploding:
    """An attempt whose handling of every frame raises."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def on_message(self, message: ToSidecar) -> None:
        raise OverflowError("Python int too large to convert to C int")

    def fail(self, reason: str) -> None:
        self.failures.append(reason)

    def alive(self) -> None:
        pass


def test_a_frame_that_cannot_be_handled_fails_its_attempt_with_the_reason() -> None:
    session = Exploding()
    deliver(session, End("inv_1"))
    assert session.failures == [
        "a End frame from the handler could not be handled: OverflowError: Python int too large to convert to C int"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.builds(lambda i: encoder.encode(Heartbeat(i)) + b"\xc1", st.text(max_size=8)))
def test_any_bytes_name_an_invocation_or_none_without_raising(data: bytes) -> None:
    found = addressee(data)
    assert found is None or isinstance(found, str)


def test_an_undecodable_frame_still_names_its_invocation() -> None:
    frame = {"t": "Command", "invocation_id": "inv_7", "index": 1, "entry": {"t": "Sleep", "wake_at_ms": 1e21}}
    assert addressee(msgspec.msgpack.encode(frame)) == "inv_7"
    assert addressee(b"\xc1 not msgpack") is None


def test_stray_frames_are_logged_once_a_period(caplog: pytest.LogCaptureFixture) -> None:
    strays = Strays("link to http://h")
    with caplog.at_level(logging.WARNING, logger="sidecar.links"):
        for n in range(100):
            strays.drop("End", f"inv_{n}")
    assert len(caplog.records) == 1 and "inv_0" in caplog.records[0].getMessage()
