"""What a link does with a frame it cannot use: fail that attempt, or drop it, never raise."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from handler_sdk.protocol import End, Heartbeat, Input, Start, ToSidecar, encoder, to_handler_decoder
from sidecar.transport.request_response import InvokeLink
from sidecar.transport.links import DeploymentPool, Link, LinkError, Strays, addressee, deliver
from tests.procs import eventually


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
    with caplog.at_level(logging.WARNING, logger="sidecar.transport.links"):
        for n in range(100):
            strays.drop("End", f"inv_{n}")
    assert len(caplog.records) == 1 and "inv_0" in caplog.records[0].getMessage()


class Recording:
    """An attempt that records what reaches it."""

    def __init__(self) -> None:
        self.messages: list[ToSidecar] = []
        self.failures: list[str] = []
        self.done = asyncio.Event()

    def on_message(self, message: ToSidecar) -> None:
        self.messages.append(message)
        self.done.set()

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        self.done.set()

    def alive(self) -> None:
        pass


def _start(invocation_id: str) -> bytes:
    return encoder.encode(Start(invocation_id, attempt=1, service="S", handler="h", key=None, input=b"",
                                headers={}, journal=[Input(b"")], state=None, seed=1))


async def test_a_request_response_answer_speaks_for_its_own_invocation_alone(aiohttp_server: Any) -> None:
    async def invoke(request: web.Request) -> web.Response:
        own = to_handler_decoder.decode(await request.read()).invocation_id
        answer = [End("inv_stranger", output=b'"forged"'), End(own, output=b'"mine"')]
        return web.Response(body=encoder.encode(answer), content_type="application/msgpack")
    application = web.Application()
    application.router.add_post("/invoke", invoke)
    server = await aiohttp_server(application)
    async with aiohttp.ClientSession() as http:
        link = InvokeLink(str(server.make_url("")), http)
        session = Recording()
        link.sessions["inv_own"] = session
        link.send(_start("inv_own"))
        await asyncio.wait_for(session.done.wait(), 5)
        await link.close()
    assert session.messages == [End("inv_own", output=b'"mine"')] and not session.failures


async def test_a_deployment_that_accepts_and_never_answers_the_upgrade_is_unreachable_not_a_hang() -> None:
    """A host whose port takes connections but whose server never answers (stopped, wedged): an
    open must give up, or every invocation of the deployment waits on it for ever, with no attempt
    and no timer, and the prober of an unreachable deployment never knocks again."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    black_hole = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    try:
        # The sidecar's own session: no total limit (links live long), a bound on connecting only.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5.0)) as http:
            pool = DeploymentPool(f"http://127.0.0.1:{port}", http, 2, open_timeout_s=0.5)
            with pytest.raises(LinkError, match="did not answer the WebSocket upgrade within 0.5 s"):
                await asyncio.wait_for(pool.acquire(), 5)
            assert held, "the connection was accepted: only the answer never came"
            with pytest.raises(LinkError):  # and the next open is a new try, not the stuck one
                await asyncio.wait_for(pool.acquire(), 5)
    finally:
        for writer in held:
            writer.close()
        black_hole.close()
        await black_hole.wait_closed()


async def test_an_open_cut_short_by_closing_the_pool_tells_its_waiters_so() -> None:
    """Closing a pool (its deployment was deleted) cancels the open under way: whoever awaits it
    (an attempt about to begin, the prober) must hear why, not end as if it had been cancelled."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    black_hole = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as http:
            pool = DeploymentPool(f"http://127.0.0.1:{port}", http, 2)
            waiting = asyncio.ensure_future(pool.acquire())

            async def accepted() -> bool:
                return bool(held)
            await eventually(accepted, timeout=5, what="the open to reach the deployment")
            assert not waiting.done(), "its upgrade is unanswered"
            await pool.close()
            with pytest.raises(LinkError, match="were closed"):
                await asyncio.wait_for(waiting, 5)
    finally:
        for writer in held:
            writer.close()
        black_hole.close()
        await black_hole.wait_closed()


async def test_a_link_closed_after_an_undecodable_frame_tells_its_attempts_why(aiohttp_server: Any) -> None:
    """A frame that names its invocation fails that attempt alone; when the handler then closes
    the socket, every attempt left on it hears that the connection closed."""
    async def connect(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        frame = {"t": "Command", "invocation_id": "inv_a", "index": 1, "entry": {"t": "Sleep", "wake_at_ms": 1e21}}
        await ws.send_bytes(msgspec.msgpack.encode(frame))
        await ws.close()
        return ws
    application = web.Application()
    application.router.add_get("/connect", connect)
    server = await aiohttp_server(application)
    async with aiohttp.ClientSession() as http:
        link = Link(await http.ws_connect(server.make_url("/connect")), str(server.make_url("")))
        named, bystander = Recording(), Recording()
        link.sessions.update(inv_a=named, inv_b=bystander)
        link.send(_start("inv_a"))
        await asyncio.wait_for(bystander.done.wait(), 5)
        await link.close()
    assert len(named.failures) == 2 and named.failures[0].startswith("undecodable frame from the handler")
    assert bystander.failures == named.failures[1:] == ["handler connection closed"]
