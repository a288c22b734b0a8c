"""Request-response links: one ``POST {uri}/invoke`` per attempt, for handler services whose host
cannot hold a WebSocket (serverless platforms).

They have the face of a WebSocket link (``links.Link``): the invoker sends them frames and
registers the attempts they deliver to. Here a ``Start`` becomes one request, and its answer (the
attempt's messages up to its ``End`` or ``Suspend``) is handed to the attempt in order. Nothing
reaches a request once it is sent: a step that needs its ``Ack`` ends the attempt with a
``Suspend`` on it, and the next ``Start`` carries it journaled; completions likewise wait for the
next ``Start``; a cooperative ``Cancel`` rides along with a ``Start`` as the header
``x-sidecar-cancel: 1``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
from yarl import URL

from handler_sdk.protocol import Cancel, Start, ToHandler, ToSidecar

from .held_blobs import HeldBlobs
from .links import LinkError, Session, Strays, deliver
from .signing import UNSIGNED, Signer

#: While a request is open, its attempt hears this often that it is alive: a long step is not
#: a silent handler (the request's connection is the liveness check here).
KEEPALIVE_S = 1.0

_sent_decoder = msgspec.msgpack.Decoder(ToHandler)
_answer_decoder = msgspec.msgpack.Decoder(list[ToSidecar])
_NO_TOTAL_LIMIT = aiohttp.ClientTimeout(total=None, sock_connect=10)


class InvokeLink:
    """Requests to one request-response deployment; any number at once."""

    def __init__(self, uri: str, http: aiohttp.ClientSession, signer: Signer = UNSIGNED) -> None:
        self._url = URL(f"{uri.rstrip('/')}/invoke")
        self._http = http
        self._signer = signer
        self._strays = Strays(f"POST {self._url}")
        self.sessions: dict[str, Session] = {}
        self.held: HeldBlobs | None = None  # nothing is kept between requests
        self.closed = False
        self._cancelling: set[str] = set()
        self._requests: set[asyncio.Task[None]] = set()

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        message = _sent_decoder.decode(frame)
        if type(message) is Start:
            # Posted on the next pass of the loop, so that a Cancel sent right after it rides along.
            asyncio.get_running_loop().call_soon(self._post, message.invocation_id, frame)
        elif type(message) is Cancel and not message.kill:
            self._cancelling.add(message.invocation_id)
        # An Ack, a Completion or a kill has nothing to travel on: see the module's docstring.

    def _post(self, invocation_id: str, frame: bytes) -> None:
        cancel = invocation_id in self._cancelling
        self._cancelling.discard(invocation_id)
        task = asyncio.ensure_future(self._invoke(invocation_id, frame, cancel))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _invoke(self, invocation_id: str, frame: bytes, cancel: bool) -> None:
        headers = {"content-type": "application/msgpack", **self._signer.headers("POST", self._url.raw_path, frame)}
        if cancel:
            headers["x-sidecar-cancel"] = "1"
        request = asyncio.ensure_future(self._request(frame, headers))
        try:
            while not (await asyncio.wait({request}, timeout=KEEPALIVE_S))[0]:
                session = self.sessions.get(invocation_id)
                if session is None:  # the attempt is over for the sidecar (killed, timed out)
                    request.cancel()
                    return
                session.alive()
            messages = request.result()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, msgspec.DecodeError) as exc:
            session = self.sessions.get(invocation_id)
            if session is not None:
                session.fail(f"POST {self._url} failed: {exc}")
            return
        for message in messages:  # an answer speaks for its own invocation alone
            session = self.sessions.get(invocation_id)
            if session is None:  # the attempt ended (an End, a violation, a kill): the rest is late
                return
            if message.invocation_id != invocation_id:
                self._strays.drop(type(message).__name__, message.invocation_id)
                continue
            deliver(session, message)

    async def _request(self, frame: bytes, headers: dict[str, str]) -> list[ToSidecar]:
        async with self._http.post(self._url, data=frame, headers=headers, timeout=_NO_TOTAL_LIMIT) as response:
            body = await response.read()
        if response.status != 200:
            raise LinkError(f"it answered {response.status}: {body[:200].decode(errors='replace')}")
        return _answer_decoder.decode(body)

    async def close(self) -> None:
        self.closed = True
        for task in self._requests:
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)


class InvokePool:
    """The pool face (``links.DeploymentPool``) of a request-response deployment: one link, ready."""

    def __init__(self, uri: str, http: aiohttp.ClientSession, signer: Signer = UNSIGNED) -> None:
        self._link = InvokeLink(uri, http, signer)

    def ready(self) -> InvokeLink:
        return self._link

    async def acquire(self) -> InvokeLink:
        return self._link

    async def close(self) -> None:
        await self._link.close()
