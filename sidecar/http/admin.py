"""Admin API (DESIGN §4): deployments, services, invocations, costs, breakers, schedules, state, health;
and the web UI (``GET /ui``, DESIGN §11) that shows them."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Annotated, Any
from urllib.parse import quote

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from multidict import CIMultiDict

from handler_sdk.protocol import ClearState, Entry, Failure, Input, Output, SetState

from ..clock import iso_ms
from ..cli.config import Settings
from ..durations import parse_duration
from ..ids import partition_of_id
from .admin_auth import bearer_auth
from .breakers import BreakerRoutes
from .costs import journal_cost, parse_costs_query, sum_costs
from .listing import LiveRecords, cursor_of, list_page, parse_query
from .payloads import PayloadViews, payload
from ..process.mesh import Mesh, MeshError
from ..metrics import Metrics
from ..process.partitions import PartitionMap
from .event_stream import EventStreamRoute
from .test_clock import TimeSkippingRoutes
from .schedules import ScheduleRoutes
from ..schedules.scheduler import Scheduler
from .ui import UiRoutes
from .errors import HTTPProblem, JsonRoutes, json_errors, json_only, json_response, refuse_long_identifiers
from .input import json_body, json_value, path_parts, storable
from ..invoker import InvocationNotFound, InvocationStateError, Invoker, KeyHeld
from ..invoker.queries import record_reason
from ..transport.registry import Registry, RegistrationError
from ..store import InvocationRecord, Store
from ..store.records import DeploymentRecord
from ..time_skipping import SkippingClock

log = logging.getLogger(__name__)


class ResumeRequest(msgspec.Struct, forbid_unknown_fields=True):
    #: Resume on this deployment instead of the one the invocation is pinned to.
    deployment: str | None = None
    #: Raise (or lower) the invocation's spending cap: one paused for its budget goes on.
    budget: Annotated[float, msgspec.Meta(ge=0)] | None = None


def _resume_body(body: bytes) -> ResumeRequest:
    return json_body(body or b"{}", ResumeRequest,
                     '{"deployment": "dp_...", "budget": 5.0} (both optional) or no body')


def _from(query: Mapping[str, str]) -> int:
    try:
        return int(query.get("from", "1"))
    except ValueError:
        raise HTTPProblem(400, f"from must be an integer, not {query['from']!r}") from None


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    uri: str
    force: bool = False
    transport: str = "websocket"


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def _failure(failure: Failure | None) -> dict[str, Any] | None:
    return None if failure is None else msgspec.structs.asdict(failure)


def _entry_view(index: int, entry: Entry, payloads: PayloadViews) -> dict[str, Any]:
    view: dict[str, Any] = {"index": index, "kind": type(entry).__name__}
    for field in entry.__struct_fields__:
        value = getattr(entry, field)
        if isinstance(value, bytes):
            value = payloads.view(value)
        elif isinstance(value, Failure):
            value = _failure(value)
        view[field] = value
    return view


def _summary(record: InvocationRecord) -> dict[str, Any]:
    return {
        "id": record.id, "target": record.target, "service": record.service, "handler": record.handler,
        "key": record.key, "status": record.status, "attempts": record.attempts,
        "failures": record.failures,
        "created_at": _iso(record.created_ms), "modified_at": _iso(record.modified_ms),
    }


def _listed(record: InvocationRecord) -> dict[str, Any]:
    """An invocation as the list shows it: its summary and, where its record tells, why it is where it is."""
    reason = record_reason(record)
    if reason is None and record.failure is not None:
        reason = record.failure.message
    return _summary(record) | {"reason": reason}


def _read_json_value(body: bytes) -> bytes:
    json_value(body)
    return body


#: How long a state edit waits for its key by default, and at most (``?wait=``).
_EDIT_WAIT_S = 10.0
_EDIT_WAIT_MAX_S = 300.0


def _edit_wait(query: Mapping[str, str]) -> float:
    text = query.get("wait")
    if text is None:
        return _EDIT_WAIT_S
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise HTTPProblem(400, f"wait: {exc}") from None
    if seconds > _EDIT_WAIT_MAX_S:
        raise HTTPProblem(400, f"wait {text[:100]!r} is too long: at most {_EDIT_WAIT_MAX_S:g} s")
    return seconds


class Admin:
    def __init__(
        self, *, invoker: Invoker, registry: Registry, store: Store, settings: Settings, http: aiohttp.ClientSession,
        partitions: PartitionMap, metrics: Metrics, scheduler: Scheduler, mesh: Mesh | None = None,
        test_clock: SkippingClock | None = None, cluster_view: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        self._metrics = metrics
        #: ``GET /cluster`` (cluster mode); None: the route does not exist.
        self._cluster_view = cluster_view
        #: Serves ``/test/clock`` (``serve --test-clock``); None: those routes do not exist.
        self._test_clock = test_clock
        self._invoker = invoker
        self._registry = registry
        self._store = store
        self._settings = settings
        self._http = http
        self._partitions = partitions
        self._mesh = mesh
        self._live = LiveRecords(invoker.table.active, partitions, mesh)
        self._payloads = PayloadViews(store)
        self._events = EventStreamRoute(invoker, partitions, mesh, answers_mesh=False)  # the ingress's answers
        self._schedules = ScheduleRoutes(scheduler=scheduler, registry=registry, store=store, mesh=mesh)
        if mesh is not None:
            mesh.handlers["admin.invocation"] = self.answer_invocation
            mesh.handlers["admin.state"] = self.answer_state
            mesh.handlers["registry.reload"] = self._reload

    def app(self) -> web.Application:
        middlewares = [json_errors(self._settings.max_body_bytes)]
        if self._settings.admin_token:
            middlewares.append(bearer_auth(self._settings.admin_token))
        app = web.Application(client_max_size=self._settings.max_body_bytes, middlewares=middlewares)
        app.on_response_prepare.append(json_only)
        r = JsonRoutes(app.router)
        r.add_get("/health", self.health)
        r.add_get("/metrics", self.metrics)
        r.add_get("/webhooks", self.webhooks)
        r.add_post("/deployments", self.register)
        r.add_get("/deployments", self.deployments)
        r.add_delete("/deployments/{id}", self.delete_deployment)
        r.add_get("/services", self.services)
        r.add_get("/services/{name}", self.service)
        r.add_get("/invocations", self.invocations)
        r.add_get("/invocations/{id}", self._routed)
        self._events.install(app, r, "/invocations/{id}/events")  # the web UI's live tail
        r.add_post("/invocations/{id}/{action:kill|cancel|pause|resume|restart}", self._routed)
        r.add_delete("/invocations/{id}", self._routed)
        r.add_get("/costs", self.costs)
        assert self._invoker.board is not None, "the admin API runs in worker 0, which holds the breakers"
        BreakerRoutes(self._invoker.board).add_to(r)
        self._schedules.add_to(r)
        r.add_get("/blobs/{sha256}", self._payloads.blob)
        r.add_get("/state/{object}/{key}", self._state_routed)
        r.add_put("/state/{object}/{key}/{name}", self._state_routed)
        r.add_delete("/state/{object}/{key}/{name}", self._state_routed)
        UiRoutes().add_to(r)
        if self._test_clock is not None:
            TimeSkippingRoutes(self._test_clock).add_to(r)
        if self._cluster_view is not None:
            r.add_get("/cluster", self.cluster)
        r.add_fallback()
        return app

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def cluster(self, request: web.Request) -> web.Response:
        """The cluster's nodes and who serves which partition, as this node sees them."""
        assert self._cluster_view is not None
        return json_response(self._cluster_view())

    async def webhooks(self, request: web.Request) -> web.Response:
        """Each webhook receiver's backlog and, as worker 0 sees it, its state."""
        return json_response({"receivers": [await r.view() for r in self._invoker.webhooks.receivers]})

    async def metrics(self, request: web.Request) -> web.Response:
        blobs, blob_bytes = self._store.blob_stats()
        self._metrics.blobs.set(blobs)
        self._metrics.blob_bytes.set(blob_bytes)
        file_bytes, used, mapped = self._store.size_stats()
        self._metrics.store_file_bytes.set(file_bytes)
        self._metrics.store_used_bytes.set(used)
        self._metrics.store_map_bytes.set(mapped)
        self._metrics.flush()
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    # --- deployments and services ---------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        body = json_body(await request.read(), RegisterRequest,
                         '{"uri": "http://host:port", "force": false, "transport": "websocket" | "request-response"}')
        try:  # shielded: a client that hangs up must not cut a registration between store and memory
            record, created = await asyncio.shield(self._register(body))
        except RegistrationError as exc:
            raise HTTPProblem(exc.status, exc.message) from None
        return json_response(record, status=201 if created else 200)

    async def _register(self, body: RegisterRequest) -> tuple[DeploymentRecord, bool]:
        record, created = await self._registry.register(
            body.uri, force=body.force, http=self._http, transport=body.transport)
        await self.deployments_changed()
        return record, created

    async def deployments_changed(self) -> None:
        """Sends parked for a target not registered are made if it is now; the other workers read
        the new deployment from the store (the one they would miss otherwise is a forced
        replacement: an unknown service makes them reload by themselves) and do the same."""
        self._invoker.calls.deliver_parked(self._partitions.owns_invocation)
        if self._mesh is None:
            return
        for index in self._mesh.others():
            try:
                await self._mesh.forward(index, "registry.reload", "POST", "/", {}, CIMultiDict(), b"")
            except MeshError as exc:
                log.warning("worker %d did not reload the registry (it will when it restarts): %s", index, exc)

    async def _reload(self, *_: object) -> web.Response:
        self._registry.reload()
        self._invoker.links.close_deleted()
        self._invoker.calls.deliver_parked(self._partitions.owns_invocation)
        return json_response({"reloaded": True})

    def _pinned(self) -> Counter[str]:
        """Unfinished invocations per deployment, every worker's (as stored: all share the store)."""
        pinned: Counter[str] = Counter()
        for invocation_id in self._store.scan_inbox():
            record = self._store.get_invocation(invocation_id)
            if record is not None and not record.finished:
                pinned[record.deployment_id] += 1
        return pinned

    def _deployment_view(self, record: DeploymentRecord, pinned: int) -> dict[str, Any]:
        serving = self._registry.serving(record.id)
        return {
            "id": record.id, "uri": record.uri, "services": [s.name for s in record.services],
            "created_at": _iso(record.created_ms), "transport": record.transport,
            "status": "active" if serving else "draining" if pinned else "drained",
            "serving": serving, "pinned_invocations": pinned,
        }

    async def deployments(self, request: web.Request) -> web.Response:
        pinned = self._pinned()
        return json_response({"deployments": [
            self._deployment_view(d, pinned[d.id]) for d in self._registry.reload().deployments.values()]})

    async def delete_deployment(self, request: web.Request) -> web.Response:
        """Forget a drained deployment: one that serves nothing new and has nothing pinned to it."""
        deployment_id = request.match_info["id"]
        record = self._registry.reload().deployments.get(deployment_id)
        if record is None:
            raise HTTPProblem(404, f"no such deployment: {deployment_id}")
        serving = self._registry.serving(deployment_id)
        if serving:
            raise HTTPProblem(409, f"deployment {deployment_id} is where new invocations of {', '.join(serving)} "
                                   "go: register the deployment that replaces it first")
        pinned = self._pinned()[deployment_id]
        if pinned:
            raise HTTPProblem(409, f"{pinned} unfinished invocations are pinned to deployment {deployment_id}: "
                                   "let them finish, or resume them on another deployment")
        await asyncio.shield(self._forget(deployment_id))  # as registering: never cut half-way
        return json_response({**self._deployment_view(record, 0), "status": "deleted"})

    async def _forget(self, deployment_id: str) -> None:
        await self._registry.delete(deployment_id)
        self._invoker.links.close_deleted()
        await self.deployments_changed()

    def _service_view(self, deployment_id: str, spec: Any) -> dict[str, Any]:
        return {**msgspec.structs.asdict(spec), "deployment_id": deployment_id}

    async def services(self, request: web.Request) -> web.Response:
        return json_response({"services": [self._service_view(d, s) for d, s in self._registry.services()]})

    async def service(self, request: web.Request) -> web.Response:
        found = self._registry.service(request.match_info["name"])
        if found is None:
            raise HTTPProblem(404, f"unknown service {request.match_info['name']!r}")
        return json_response(self._service_view(*found))

    # --- invocations ----------------------------------------------------------------------------

    async def invocations(self, request: web.Request) -> web.Response:
        records, last = await list_page(self._store, parse_query(request.query), self._live)
        page: dict[str, Any] = {"invocations": [_listed(r) for r in records]}
        if last is not None:
            page["next_cursor"] = cursor_of(last)
        return json_response(page)

    async def _routed(self, request: web.Request) -> web.Response:
        """Show, kill and purge act on live state that only the owning worker holds."""
        partition = partition_of_id(request.match_info["id"])
        if self._mesh is not None and partition is not None and not self._partitions.owns(partition):
            return await self._mesh.forward(self._partitions.owner(partition), "admin.invocation", request.method,
                                            request.rel_url.raw_path, dict(request.query), request.headers,
                                            await request.read())
        return await self.answer_invocation(
            request.method, request.rel_url.raw_path, dict(request.query), request.headers, await request.read())

    async def answer_invocation(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        storable(headers)
        parts = path_parts(path)  # invocations/{id}[/action]
        invocation_id = parts[1]
        if method in ("GET", "HEAD"):
            return self._show(invocation_id)
        if method == "DELETE":
            return await self._purge(invocation_id)
        self._record(invocation_id)
        action = parts[-1]
        try:
            if action == "restart":
                return json_response({"id": await self._invoker.operations.restart(invocation_id, _from(query))}, status=201)
            if action == "resume":
                resume = _resume_body(body)
                record = self._invoker.operations.resume_paused(invocation_id, resume.deployment, resume.budget)
            else:
                record = {"kill": self._invoker.operations.kill, "cancel": self._invoker.operations.cancel,
                          "pause": self._invoker.operations.pause}[action](invocation_id)
        except InvocationStateError as exc:
            raise HTTPProblem(409, str(exc)) from None
        except InvocationNotFound as exc:
            raise HTTPProblem(404, f"no such deployment or handler: {exc}") from None
        return json_response({"id": record.id, "status": record.status}, status=202)

    def _record(self, invocation_id: str) -> InvocationRecord:
        try:
            return self._invoker.table.current(invocation_id)
        except InvocationNotFound:
            raise HTTPProblem(404, f"no such invocation {invocation_id!r}") from None

    def _show(self, invocation_id: str) -> web.Response:
        record = self._record(invocation_id)
        journal = self._store.read_journal(record.id)
        view = _summary(record) | {
            "reason": self._invoker.queries.reason(record.id), "deployment_id": record.deployment_id,
            "idempotency_key": record.idempotency_key, "last_error": record.last_error,
            "next_retry_at": _iso(record.next_retry_ms), "start_at": _iso(record.start_at_ms),
            "completed_at": _iso(record.completed_ms),
            "input": self._payloads.view(journal[0].value) if journal and type(journal[0]) is Input else None,
            "output": self._payloads.view(record.output), "failure": _failure(record.failure),
            "cost": journal_cost(journal), "budget": record.budget, "warnings": record.warnings,
            "trace_id": record.trace.trace_id if record.trace is not None else None,
            "journal": [_entry_view(i, e, self._payloads) for i, e in enumerate(journal)],
        }
        if journal and type(journal[-1]) is not Output and not record.finished:
            view["journal_committed"] = len(journal)
        return json_response(view)

    async def _purge(self, invocation_id: str) -> web.Response:
        self._record(invocation_id)
        try:
            await asyncio.shield(self._invoker.operations.purge(invocation_id))
        except InvocationStateError as exc:
            raise HTTPProblem(409, str(exc)) from None
        return json_response({"id": invocation_id, "purged": True})

    # --- costs ----------------------------------------------------------------------------------

    async def costs(self, request: web.Request) -> web.Response:
        return json_response(await sum_costs(self._store, parse_costs_query(request.query)))

    # --- state ----------------------------------------------------------------------------------

    async def _state_routed(self, request: web.Request) -> web.Response:
        """State is read and edited by the worker that owns the key: its edits wait in the key's line."""
        info = request.match_info
        refuse_long_identifiers(("object key", info["key"]), ("state name", info.get("name")))
        found = self._registry.service(info["object"])  # here: worker 0's is never behind a registration
        if found is None or found[1].kind == "service":
            raise HTTPProblem(404, f"no virtual object or workflow named {info['object']!r}")
        parts = [info["object"], info["key"], *([info["name"]] if "name" in info else [])]
        path = "/state/" + "/".join(quote(part, safe="") for part in parts)  # as match_info decoded them
        owner = self._partitions.owner(self._partitions.of_key(info["object"], info["key"]))
        args = (request.method, path, dict(request.query), CIMultiDict[str](), await request.read())  # no headers used
        # A client that hangs up cancels this handler (handler_cancellation): its edit leaves the line.
        if self._mesh is not None and owner != self._mesh.index:
            return await self._mesh.forward(owner, "admin.state", *args)
        return await self.answer_state(*args)

    async def answer_state(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
    ) -> web.Response:
        _, name, key, *state_name = path_parts(path)  # state/{object}/{key}[/{name}], checked by _state_routed
        if method in ("GET", "HEAD"):  # aiohttp answers HEAD on every GET route
            state = self._invoker.state_edits.current(name, key)
            return json_response({"state": {n: payload(value) for n, value in state.items()}})
        wait_s = _edit_wait(query)
        write = SetState(state_name[0], _read_json_value(body)) if method == "PUT" else ClearState(state_name[0])
        try:
            applied = await self._invoker.state_edits.edit(name, key, write, wait_s)
        except KeyHeld as exc:
            raise HTTPProblem(409, str(exc), headers={"Retry-After": "1"}) from None
        return json_response({"object": name, "key": key, "name": state_name[0],
                              "set" if method == "PUT" else "cleared": True,
                              "applied_at": iso_ms(applied.applied_ms), "waited_for": applied.waited_for})
