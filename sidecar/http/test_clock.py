"""``GET /test/clock`` and ``POST /test/clock {"advance_ms": N}`` (admin): time skipping for tests.

Served only by a sidecar started with ``--test-clock``; without it the routes do not exist (404).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from ..clock import iso_ms
from ..time_skipping import SkippingClock
from .errors import HTTPProblem, JsonRoutes, json_response
from .input import json_body

#: The most one advance moves the clock, and the most all of them together: times stay within what
#: records (signed 64-bit milliseconds) and dates (year 9999) can hold.
MAX_ADVANCE_MS = 100 * 366 * 24 * 3600 * 1000
MAX_OFFSET_MS = 10 * MAX_ADVANCE_MS


class AdvanceRequest(msgspec.Struct, forbid_unknown_fields=True):
    advance_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_ADVANCE_MS)]


class ClockView(msgspec.Struct):
    now_ms: int
    now: str
    offset_ms: int


class TimeSkippingRoutes:
    def __init__(self, clock: SkippingClock) -> None:
        self._clock = clock

    def add_to(self, routes: JsonRoutes) -> None:
        routes.add_get("/test/clock", self.show)
        routes.add_post("/test/clock", self.advance)

    def _view(self, now_ms: int) -> web.Response:
        return json_response(ClockView(now_ms=now_ms, now=iso_ms(now_ms), offset_ms=self._clock.offset_ms))

    async def show(self, request: web.Request) -> web.Response:
        return self._view(self._clock.now_ms())

    async def advance(self, request: web.Request) -> web.Response:
        body = json_body(await request.read(), AdvanceRequest,
                         f'{{"advance_ms": N}}, N a whole number of milliseconds from 0 to {MAX_ADVANCE_MS}')
        if self._clock.offset_ms + body.advance_ms > MAX_OFFSET_MS:
            raise HTTPProblem(400, f"the clock is {self._clock.offset_ms} ms ahead already; it may run at most "
                                   f"{MAX_OFFSET_MS} ms ahead of the wall clock")
        return self._view(await self._clock.advance(body.advance_ms))
