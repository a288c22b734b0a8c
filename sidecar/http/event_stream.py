"""``GET /restate/invocation/{id}/events``: what an invocation publishes, as Server-Sent Events.

The worker that owns the invocation answers pages of events (``InvocationQueries.event_page``); a request
that lands on another worker fetches those pages over the mesh, one long poll at a time, so any
worker serves any stream. Each event's SSE ``id`` is its place in the stream, so a client that
reconnects with ``Last-Event-ID`` goes on where it was. Journaled events are SSE events named
``milestone``, ephemeral ones ``token``; the stream ends with an ``end`` event that carries the
invocation's status, output and failure.

The admin API serves the same stream at ``GET /invocations/{id}/events`` (the web UI's live tail,
on the port it is served from, behind the admin token where there is one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from .errors import HTTPProblem, JsonRoutes, json_response
from ..ids import partition_of_id
from ..invoker import InvocationNotFound, Invoker
from ..invoker.events import EventPage, Place
from ..process.mesh import Mesh, answer_body
from ..process.partitions import PartitionMap

#: The longest a stream waits for news before it sends a comment line to keep the connection up.
POLL_S = 10.0

_page_decoder = msgspec.json.Decoder(EventPage)
_encoder = msgspec.json.Encoder()


def sse(page: EventPage) -> bytes:
    """A page as SSE: one message per event (its data is compact JSON: one line), named
    ``milestone`` or ``token``, then the ``end``."""
    parts = [b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.kind, bytes(event.data))
             for event in page.events]
    if page.end is not None:
        parts.append(b"event: end\ndata: %s\n\n" % _encoder.encode(page.end))
    return b"".join(parts)


class EventStreamRoute:
    def __init__(self, invoker: Invoker, partitions: PartitionMap, mesh: Mesh | None, *,
                 answers_mesh: bool = True) -> None:
        """``answers_mesh``: this one answers the other workers' page requests (one per worker does)."""
        self._invoker = invoker
        self._partitions = partitions
        self._mesh = mesh
        self._streams: set[asyncio.Task[object]] = set()
        if mesh is not None and answers_mesh:
            mesh.handlers["ingress.events"] = self.answer_page

    def install(self, app: web.Application, routes: JsonRoutes, path: str = "/restate/invocation/{id}/events") -> None:
        routes.add_get(path, self.stream)
        app.on_shutdown.append(self._end_streams)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        invocation_id = request.match_info["id"]
        last = request.headers.get("Last-Event-ID")
        try:
            after = Place.parse(last) if last else None
        except ValueError:
            raise HTTPProblem(400, f"Last-Event-ID {last!r} is not an id this stream sends (like 7 or 7.2)") from None
        page = await self._page(invocation_id, after, 0.0)  # an unknown invocation is a 404, not a stream
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-restate-id": invocation_id})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            while True:
                await response.write(sse(page) or b": waiting\n\n")
                if page.end is not None:
                    break
                if page.events:
                    after = Place.parse(page.events[-1].id)
                page = await self._page(invocation_id, after, POLL_S)
        except (ConnectionError, HTTPProblem):
            return response  # the client left, or the invocation was purged or its owner went away
        finally:
            self._streams.discard(task)
        return response

    async def answer_page(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        """A page for a stream that another worker serves (``path`` is the invocation ID)."""
        after = Place.parse(query["after"]) if query.get("after") else None
        return json_response(await self._page(path, after, float(query.get("wait", "0"))))

    async def _page(self, invocation_id: str, after: Place | None, wait_s: float) -> EventPage:
        partition = partition_of_id(invocation_id)
        if self._mesh is not None and partition is not None and not self._partitions.owns(partition):
            query = {"after": str(after) if after else "", "wait": str(wait_s)}
            response = await self._mesh.forward(
                self._partitions.owner(partition), "ingress.events", "GET", invocation_id, query, CIMultiDict(), b"")
            body = answer_body(response)
            if response.status != 200:
                raise HTTPProblem(response.status, msgspec.json.decode(body or b"{}").get("message", ""))
            return _page_decoder.decode(body)
        try:
            return await self._invoker.queries.event_page(invocation_id, after, wait_s)
        except InvocationNotFound:
            raise HTTPProblem(404, f"no such invocation: {invocation_id}") from None

    async def _end_streams(self, app: web.Application) -> None:
        """Shutting down: end open streams now rather than make the server wait for them."""
        for task in list(self._streams):
            task.cancel()
