"""Ingress: Restate-compatible HTTP calls, sends and attaches (DESIGN §3).

Paths are parsed by hand from one catch-all route because their meaning depends on the registry:
``/A/B/send`` is a send to service ``A`` handler ``B``, while ``/A/B/C`` calls handler ``C`` of
object ``A`` on key ``B``. Payload bytes are passed through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from handler_sdk.protocol import Failure

from ..cli.config import Settings
from ..clock import now_ms
from ..ids import partition_of_id
from ..process.mesh import Mesh
from ..process.partitions import PartitionMap
from ..durations import parse_delay
from .event_stream import EventStreamRoute
from .errors import (
    ErrorBody, HTTPProblem, JsonRoutes, error_response, exception_response, json_errors, json_only, json_response,
    refuse_long_identifiers,
)
from .input import budget_header, json_value, path_parts, storable
from ..invoker import (
    AwakeableCompleted, AwakeableNotFound, InvocationNotFound, Invoker, Overloaded, parse_awakeable_id,
)
from ..invoker.idempotency import WORKFLOW_RUN
from ..schedules.scheduler import FiringRefused
from ..transport.registry import Registry, Route
from ..store import InvocationRecord

log = logging.getLogger(__name__)

#: Request headers that describe the HTTP exchange, not the call: not forwarded to handlers.
_HOP_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "accept-encoding",
    "idempotency-key", "user-agent", "accept", "expect",
})
_NOT_READY = 470


class SendAccepted(msgspec.Struct):
    invocationId: str
    status: str


_accepted_decoder = msgspec.json.Decoder(SendAccepted)
_error_decoder = msgspec.json.Decoder(ErrorBody)


class Target(msgspec.Struct, frozen=True):
    route: Route
    key: str | None
    send: bool


def _is_json(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "application/json")
    return content_type.split(";", 1)[0].strip().endswith("json")


class Ingress:
    def __init__(
        self, invoker: Invoker, registry: Registry, settings: Settings, partitions: PartitionMap,
        mesh: Mesh | None = None,
    ) -> None:
        self._invoker = invoker
        self._registry = registry
        self._settings = settings
        self._partitions = partitions
        self._mesh = mesh
        self._events = EventStreamRoute(invoker, partitions, mesh)
        if mesh is not None:
            mesh.handlers["ingress.call"] = self.answer_call
            mesh.handlers["ingress.invocation"] = self.answer_invocation
            mesh.handlers["ingress.awakeable"] = self.answer_awakeable
            mesh.handlers["ingress.workflow"] = self.answer_workflow

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._settings.max_body_bytes, middlewares=[json_errors(self._settings.max_body_bytes)])
        app.on_response_prepare.append(json_only)
        r = JsonRoutes(app.router)
        r.add_get("/restate/health", self.health)
        self._events.install(app, r)  # before the next route, which would take .../events too
        # [\s\S], not ".": a part may hold a newline (%0A) too
        r.add_get(r"/restate/invocation/{tail:[\s\S]+}", self._invocation)
        r.add_post("/restate/awakeables/{id}/{action:resolve|reject}", self._awakeable)
        r.add_get("/restate/workflow/{name}/{key}/{action:attach|output}", self._workflow)
        r.add_post(r"/{tail:[\s\S]+}", self._call)
        r.add_fallback()
        return app

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    # --- calls and sends ------------------------------------------------------------------------

    def _target(self, path: str) -> Target:
        parts = path_parts(path)
        send = False
        if parts[0] == "restate" and len(parts) > 2 and parts[1] in ("call", "send"):
            send = parts[1] == "send"
            parts = parts[2:]
        elif parts[-1] == "send" and len(parts) in (3, 4):
            found = self._registry.service(parts[0])
            keyed = found is not None and found[1].kind != "service"
            if len(parts) == 4 or not keyed:
                send = True
                parts = parts[:-1]
        if len(parts) not in (2, 3) or not all(parts):
            raise HTTPProblem(404, f"no such target {path!r}: expected /Service/handler or /Object/key/handler")
        found = self._registry.service(parts[0]) or self._registry.reload().service(parts[0])
        if found is None:
            raise HTTPProblem(404, f"unknown service {parts[0]!r}")
        keyed = found[1].kind != "service"
        if keyed != (len(parts) == 3):
            shape = "/Object/key/handler" if keyed else "/Service/handler"
            raise HTTPProblem(404, f"{parts[0]} is a {found[1].kind}: call it as {shape}")
        route = self._registry.route(parts[0], parts[-1])
        if route is None:
            raise HTTPProblem(404, f"{parts[0]} has no handler {parts[-1]!r}")
        return Target(route, parts[1] if keyed else None, send)

    async def _call(self, request: web.Request) -> web.Response:
        body = await request.read()
        return await self.answer_call(request.method, request.rel_url.raw_path, dict(request.query),
                                      request.headers, body)

    def _owner(self, partition: int | None) -> int | None:
        """The worker to hand a request to, or None when this one owns it."""
        if self._mesh is None or partition is None or self._partitions.owns(partition):
            return None
        return self._partitions.owner(partition)

    async def answer_call(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        storable(headers)
        target = self._target(path)
        idem = headers.get("idempotency-key") or None
        refuse_long_identifiers(("object key", target.key), ("idempotency key", idem))
        partition = self._partitions.of_target(target.route.service.name, target.key, target.route.handler.name, idem)
        owner = self._owner(partition)
        if owner is not None:
            assert self._mesh is not None
            return await self._mesh.forward(owner, "ingress.call", method, path, dict(query), headers, body)
        delay_s = 0.0
        if "delay" in query:
            if not target.send:
                raise HTTPProblem(400, "delay applies to sends only: use .../send?delay=10s")
            try:
                delay_s = parse_delay(query["delay"])
            except ValueError as exc:
                raise HTTPProblem(400, str(exc)) from None
        budget = budget_header(headers)
        if body and _is_json(headers):
            json_value(body)
        forwarded = {k.lower(): v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            invocation_id, previously = await self._invoker.lifecycle.submit(
                target.route, target.key, body, forwarded, idem, delay_s=delay_s, partition=partition,
                budget=budget)
        except Overloaded as refusal:
            raise HTTPProblem(503 if refusal.whole_worker else 429, str(refusal), {"Retry-After": "1"}) from None
        response_headers = {"x-restate-id": invocation_id}
        if idem:
            response_headers["idempotency-expires"] = self._expiry(None)
        if target.send:
            status = "PreviouslyAccepted" if previously else "Accepted"
            return json_response(SendAccepted(invocation_id, status), status=202, headers=response_headers)
        if previously and target.route.handler.kind == "workflow":
            raise HTTPProblem(409, f"workflow {target.route.service.name}/{target.key} already ran "
                                   f"(invocation {invocation_id}); attach to it for its result",
                              response_headers)
        return await self._result(invocation_id, response_headers)

    async def send_scheduled(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[str, bool]:
        """A schedule's firing: the send a client would make to ``/restate/send/{target}`` with
        ``headers`` (its idempotency key among them), handed to the owning worker the same way."""
        try:
            response = await self.answer_call("POST", f"/restate/send/{target}", {}, CIMultiDict(headers), body)
        except Exception as exc:  # what the ingress answers a client with: a refusal or a 503
            response = exception_response(exc, f"the firing of a schedule for {target}")
        raw = response.body if isinstance(response.body, bytes) else b""
        if response.status != 202:
            try:
                message = _error_decoder.decode(raw).message
            except (msgspec.DecodeError, msgspec.ValidationError):
                message = raw[:200].decode(errors="replace")
            raise FiringRefused(response.status, message)
        accepted = _accepted_decoder.decode(raw)
        return accepted.invocationId, accepted.status == "PreviouslyAccepted"

    def _expiry(self, record: InvocationRecord | None) -> str:
        base_ms = record.completed_ms if record is not None and record.completed_ms else now_ms()
        instant = datetime.fromtimestamp(base_ms / 1000 + self._settings.retention_s, tz=timezone.utc)
        return instant.isoformat(timespec="seconds").replace("+00:00", "Z")

    async def _result(self, invocation_id: str, headers: dict[str, str]) -> web.Response:
        return _result_response(await self._invoker.queries.outcome(invocation_id), headers)

    # --- awakeables ------------------------------------------------------------------------------

    async def _awakeable(self, request: web.Request) -> web.Response:
        path = f"{request.match_info['id']}/{request.match_info['action']}"
        return await self.answer_awakeable(request.method, path, {}, request.headers, await request.read())

    async def answer_awakeable(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        """Resolve (body: the JSON value) or reject (body: the reason) an awakeable: 202 once durable."""
        storable(headers)
        awakeable_id, action = path.rsplit("/", 1)
        refuse_long_identifiers(("awakeable ID", awakeable_id))
        try:
            invocation_id, _ = parse_awakeable_id(awakeable_id)
        except ValueError:
            raise HTTPProblem(404, f"no such awakeable {awakeable_id!r}") from None
        owner = self._owner(partition_of_id(invocation_id))
        if owner is not None:
            assert self._mesh is not None
            return await self._mesh.forward(owner, "ingress.awakeable", method, path, {}, headers, body)
        value: bytes | None = None
        failure: Failure | None = None
        if action == "resolve":
            value = body or b"null"
            json_value(value)
        else:
            failure = Failure(code=500, message=body.decode(errors="replace") or "rejected", terminal=True)
        try:
            await self._invoker.resolutions.resolve(awakeable_id, value, failure)
        except AwakeableNotFound:
            raise HTTPProblem(404, f"no such awakeable {awakeable_id!r}") from None
        except AwakeableCompleted:
            raise HTTPProblem(409, f"awakeable {awakeable_id!r} was already completed") from None
        return json_response({"id": awakeable_id, "status": "completed"}, status=202)

    # --- attach / output ------------------------------------------------------------------------

    async def _invocation(self, request: web.Request) -> web.Response:
        return await self.answer_invocation(
            request.method, request.rel_url.raw_path.removeprefix("/restate/invocation/"), {},
            request.headers, b"")

    async def answer_invocation(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        storable(headers)
        parts = path_parts(path)
        action = parts[-1]
        if action not in ("attach", "output") or len(parts) not in (2, 4, 5):
            raise HTTPProblem(404, "expected /restate/invocation/{id}/attach|output or "
                                   "/restate/invocation/{service}[/{key}]/{handler}/{idempotency-key}/attach|output")
        if len(parts) == 2:
            refuse_long_identifiers(("invocation ID", parts[0]))
            partition = partition_of_id(parts[0])
        else:
            key = parts[1] if len(parts) == 5 else None
            refuse_long_identifiers(("service name", parts[0]), ("object key", key), ("handler name", parts[-3]),
                                    ("idempotency key", parts[-2]))
            partition = self._partitions.of_target(parts[0], key, parts[-3], parts[-2])
        owner = self._owner(partition)
        if owner is not None:
            assert self._mesh is not None
            return await self._mesh.forward(owner, "ingress.invocation", method, path, {}, headers, b"")
        try:
            if len(parts) == 2:
                invocation_id = parts[0]
            else:
                service, handler, idem = parts[0], parts[-3], parts[-2]
                key = parts[1] if len(parts) == 5 else None
                invocation_id = self._invoker.table.find_by_idempotency_key(service, key, handler, idem)
        except InvocationNotFound:
            raise HTTPProblem(404, f"no such invocation: {'/'.join(parts[:-1])}") from None
        return await self._attach_or_output(invocation_id, action)

    async def _attach_or_output(self, invocation_id: str, action: str) -> web.Response:
        headers = {"x-restate-id": invocation_id}
        try:
            if action == "attach":
                return await self._result(invocation_id, headers)
            record = self._invoker.table.current(invocation_id)
        except InvocationNotFound:
            raise HTTPProblem(404, f"no such invocation: {invocation_id}") from None
        if not record.finished:
            return error_response(_NOT_READY, "not ready", headers=headers)
        return _result_response(record, headers)

    # --- workflows by key -------------------------------------------------------------------------

    async def _workflow(self, request: web.Request) -> web.Response:
        path = request.rel_url.raw_path.removeprefix("/restate/workflow/")
        return await self.answer_workflow(request.method, path, {}, request.headers, b"")

    async def answer_workflow(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        """A workflow's result by its key: ``{name}/{key}/attach|output``."""
        storable(headers)
        name, key, action = path_parts(path)
        refuse_long_identifiers(("workflow key", key))
        found = self._registry.service(name) or self._registry.reload().service(name)
        main = next((h.name for h in found[1].handlers if h.kind == "workflow"), None) if found else None
        if main is None:
            raise HTTPProblem(404, f"no workflow named {name!r}")
        owner = self._owner(self._partitions.of_key(name, key))
        if owner is not None:
            assert self._mesh is not None
            return await self._mesh.forward(owner, "ingress.workflow", method, path, {}, headers, b"")
        try:
            invocation_id = self._invoker.table.find_by_idempotency_key(name, key, main, WORKFLOW_RUN)
        except InvocationNotFound:
            raise HTTPProblem(404, f"workflow {name}/{key} has not run") from None
        return await self._attach_or_output(invocation_id, action)


def _result_response(record: InvocationRecord, headers: dict[str, str]) -> web.Response:
    failure = record.failure
    if failure is None:
        return web.Response(status=200, body=record.output or b"null", content_type="application/json",
                            headers=headers)
    status = failure.code if 400 <= failure.code < 600 else 500
    return error_response(status, failure.message, headers=headers)
