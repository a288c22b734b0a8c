"""``GET /breakers`` and ``POST /breakers/{name}/reset`` (admin): the circuit breakers as worker 0,
which holds them, sees them."""

from __future__ import annotations

from aiohttp import web

from ..invoker.breakers import BreakerBoard
from .errors import HTTPProblem, JsonRoutes, json_response
from .input import path_parts


class BreakerRoutes:
    def __init__(self, board: BreakerBoard) -> None:
        self._board = board

    def add_to(self, routes: JsonRoutes) -> None:
        routes.add_get("/breakers", self.list)
        routes.add_post("/breakers/{name}/reset", self.reset)

    async def list(self, request: web.Request) -> web.Response:
        return json_response({"breakers": self._board.views()})

    async def reset(self, request: web.Request) -> web.Response:
        name = path_parts(request.raw_path.split("?", 1)[0])[1]
        if not self._board.reset(name):
            raise HTTPProblem(404, f"no breaker named {name[:200]!r}: none of the steps seen so far names it")
        return json_response({"name": name, "state": "closed"})
