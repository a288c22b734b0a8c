"""``sidecar_http_responses_total{api, code}``: every response an API sends, counted as it starts.

A response-prepare hook, not a middleware: it runs once per response with no extra await in the
handler chain, and each (api, code) pair's tally (``tallies``) is looked up once, not per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..tallies import CounterTally, Labelled

ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def count_responses(counter: Labelled[CounterTally], api: str) -> ResponseHook:
    """A hook for ``app.on_response_prepare`` counting ``api``'s responses by status code."""
    by_code: dict[int, CounterTally] = {}

    async def counted(request: web.Request, response: web.StreamResponse) -> None:
        child = by_code.get(response.status)
        if child is None:
            child = by_code[response.status] = counter.labels(api, str(response.status))
        child.inc()

    return counted
