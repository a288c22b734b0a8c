"""``/schedules`` (admin, DESIGN §12): durable cron and intervals.

A schedule is set and deleted by the worker that fires it (the owner of its partition, see
``PartitionMap.of_schedule``), so that a change takes effect there at once; the others hand
those requests to it over the mesh. Lists are read from the store, which the owner writes after
each fire time it handles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from ..clock import iso_ms, now_ms
from ..process.mesh import Mesh
from ..schedules.scheduler import Scheduler
from ..schedules.spec import EXPECTED, ScheduleBody, ScheduleRefused, name_problem, parse_spec
from ..store import Store
from ..store.records import ScheduleRecord
from ..transport.registry import Registry
from .errors import HTTPProblem, JsonRoutes, json_response
from .input import json_body, path_parts


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def _every(interval_ms: int) -> str:
    return f"{interval_ms // 1000}s" if interval_ms % 1000 == 0 else f"{interval_ms}ms"


def schedule_view(record: ScheduleRecord) -> dict[str, Any]:
    spec = record.spec
    catch_up = record.last_catch_up
    return {
        "name": record.name, "cron": spec.cron, "timezone": spec.timezone if spec.cron is not None else None,
        "every": _every(spec.every_ms) if spec.every_ms is not None else None, "target": spec.target,
        "input": msgspec.Raw(spec.input), "overlap": spec.overlap, "catch_up": spec.catch_up,
        "created_at": _iso(record.created_ms), "updated_at": _iso(record.updated_ms),
        "next_fire_ms": record.next_fire_ms, "next_fire_at": _iso(record.next_fire_ms),
        "last_fire_ms": record.last_fire_ms, "last_fire_at": _iso(record.last_fire_ms),
        "last_invocation_id": record.last_invocation_id,
        "fired": record.fired, "skipped": record.skipped, "last_skipped_ms": record.last_skipped_ms,
        "missed": record.missed, "failed": record.failed, "last_error": record.last_error,
        "last_catch_up": None if catch_up is None else {
            "at_ms": catch_up.at_ms, "due": catch_up.due, "fired": catch_up.fired},
    }


class ScheduleRoutes:
    def __init__(self, *, scheduler: Scheduler, registry: Registry, store: Store, mesh: Mesh | None) -> None:
        self._scheduler = scheduler
        self._registry = registry
        self._store = store
        self._mesh = mesh
        if mesh is not None:
            mesh.handlers["admin.schedule"] = self.answer

    def add_to(self, routes: JsonRoutes) -> None:
        routes.add_get("/schedules", self.list)
        routes.add_get("/schedules/{name:[^/]+}", self.show)
        routes.add_put("/schedules/{name:[^/]+}", self._routed)
        routes.add_delete("/schedules/{name:[^/]+}", self._routed)

    async def list(self, request: web.Request) -> web.Response:
        return json_response({"schedules": [schedule_view(r) for r in self._store.list_schedules()]})

    async def show(self, request: web.Request) -> web.Response:
        name = _name(request.rel_url.raw_path)
        record = self._store.get_schedule(name)
        if record is None:
            raise HTTPProblem(404, f"no schedule named {name!r}")
        return json_response(schedule_view(record))

    async def _routed(self, request: web.Request) -> web.Response:
        """Set and deleted where it fires: the owner of its partition."""
        name = _name(request.rel_url.raw_path)
        body = await request.read()
        owner = self._scheduler.owner(name)
        if self._mesh is not None and owner != self._mesh.index:
            return await self._mesh.forward(owner, "admin.schedule", request.method, f"/schedules/{name}", {},
                                            CIMultiDict[str](), body)
        return await self.answer(request.method, f"/schedules/{name}", {}, request.headers, body)

    async def answer(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        name = _name(path)
        if method == "DELETE":
            if not await asyncio.shield(self._scheduler.delete(name)):  # never cut between memory and store
                raise HTTPProblem(404, f"no schedule named {name!r}")
            return json_response({"name": name, "deleted": True})
        asked = json_body(body, ScheduleBody, EXPECTED)
        try:
            spec = parse_spec(asked, self._registry, now_ms())
        except ScheduleRefused as exc:
            raise HTTPProblem(400, str(exc)) from None
        record, created = await asyncio.shield(self._scheduler.put(name, spec))
        return json_response(schedule_view(record), status=201 if created else 200)


def _name(raw_path: str) -> str:
    """The schedule's name in ``/schedules/{name}``, checked (400: not a name a schedule may have)."""
    parts = path_parts(raw_path)
    name = parts[1] if len(parts) == 2 else ""
    if (problem := name_problem(name)) is not None:
        raise HTTPProblem(400, problem)
    return name
