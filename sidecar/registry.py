"""Deployments and the services they serve: discovery, registration, routing.

Deployments are immutable: registering a new one for a service routes *new* invocations to it,
while invocations already running stay pinned to the deployment they started on.
"""

from __future__ import annotations

import time

import aiohttp
import msgspec

from handler_sdk.protocol import PROTOCOL_VERSION, Discovery, HandlerSpec, ServiceSpec

from .ids import IdGenerator
from .store import Changes, DeploymentRecord, Store
from .store.records import TRANSPORTS

_discovery_decoder = msgspec.json.Decoder(Discovery)

#: The longest interval or timeout a handler may ask for (100 years): deadlines and retry times
#: computed from it must fit a clock and the store's 64-bit fields.
MAX_DURATION_MS = 100 * 365 * 24 * 3600 * 1000


class RegistrationError(Exception):
    """Registration refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Route(msgspec.Struct, frozen=True):
    deployment_id: str
    service: ServiceSpec
    handler: HandlerSpec


class Registry:
    def __init__(self, store: Store, ids: IdGenerator) -> None:
        self._store = store
        self._ids = ids
        self.deployments: dict[str, DeploymentRecord] = {}
        #: service name -> (deployment ID, spec) of the newest deployment that serves it.
        self._services: dict[str, tuple[str, ServiceSpec]] = {}
        for record in sorted(store.list_deployments(), key=lambda d: d.created_ms):
            self._install(record)

    def _install(self, record: DeploymentRecord) -> None:
        self.deployments[record.id] = record
        for name, (deployment_id, _) in list(self._services.items()):
            if deployment_id == record.id:  # a forced replacement may drop services
                del self._services[name]
        for spec in record.services:
            self._services[spec.name] = (record.id, spec)

    def reload(self) -> Registry:
        """Pick up deployments another worker registered or deleted (the store is shared)."""
        stored = sorted(self._store.list_deployments(), key=lambda d: d.created_ms)
        if any(deployment_id not in {r.id for r in stored} for deployment_id in self.deployments):
            self.deployments.clear()
            self._services.clear()
        for record in stored:
            if self.deployments.get(record.id) != record:
                self._install(record)
        return self

    def serving(self, deployment_id: str) -> list[str]:
        """The services whose new invocations go to ``deployment_id``."""
        return sorted(name for name, (routed, _) in self._services.items() if routed == deployment_id)

    async def delete(self, deployment_id: str) -> None:
        """Forget a deployment that serves nothing (the caller checked that none is pinned to it)."""
        changes = Changes()
        changes.delete_deployment(deployment_id)
        await self._store.submit(changes)
        self.deployments.pop(deployment_id, None)

    def services(self) -> list[tuple[str, ServiceSpec]]:
        return [self._services[name] for name in sorted(self._services)]

    def service(self, name: str) -> tuple[str, ServiceSpec] | None:
        return self._services.get(name)

    def route(self, service: str, handler: str) -> Route | None:
        found = self._services.get(service)
        if found is None:
            return None
        deployment_id, spec = found
        for candidate in spec.handlers:
            if candidate.name == handler:
                return Route(deployment_id, spec, candidate)
        return None

    def handler_spec(self, deployment_id: str, service: str, handler: str) -> HandlerSpec | None:
        """The spec an in-flight invocation was pinned to (its deployment, not the newest)."""
        record = self.deployments.get(deployment_id)
        for spec in record.services if record else ():
            if spec.name == service:
                return next((h for h in spec.handlers if h.name == handler), None)
        return None

    async def register(
        self, uri: str, *, force: bool, http: aiohttp.ClientSession, transport: str = "websocket",
    ) -> tuple[DeploymentRecord, bool]:
        """Discover ``uri`` and register it. Returns the record and whether it is new."""
        uri = uri.rstrip("/")
        if not uri.startswith(("http://", "https://")):
            raise RegistrationError(400, f"deployment uri must be http:// or https://, not {uri!r}")
        if transport not in TRANSPORTS:
            raise RegistrationError(400, f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        discovery = await _discover(uri, http)
        existing = next((d for d in self.deployments.values() if d.uri == uri), None)
        if existing is not None and (existing.services, existing.transport) == (discovery.services, transport):
            return existing, False
        if existing is not None and not force:
            raise RegistrationError(409, f"a deployment at {uri} is already registered with other services or "
                                         "another transport; pass force to replace it")
        record = DeploymentRecord(
            id=existing.id if existing else self._ids.deployment_id(), uri=uri, services=discovery.services,
            created_ms=int(time.time() * 1000), transport=transport,
        )
        changes = Changes()
        changes.put_deployment(record)
        await self._store.submit(changes)
        self._install(record)
        return record, True


async def _discover(uri: str, http: aiohttp.ClientSession) -> Discovery:
    try:
        async with http.get(f"{uri}/discover", timeout=aiohttp.ClientTimeout(total=10)) as response:
            body = await response.read()
            if response.status != 200:
                raise RegistrationError(400, f"discovery at {uri}/discover answered {response.status}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise RegistrationError(400, f"cannot reach {uri}/discover: {exc or type(exc).__name__}") from None
    try:
        discovery = _discovery_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RegistrationError(400, f"discovery at {uri}/discover is malformed: {exc}") from None
    if discovery.protocol != PROTOCOL_VERSION:
        raise RegistrationError(400, f"{uri} speaks protocol {discovery.protocol}; this sidecar speaks {PROTOCOL_VERSION}")
    if not discovery.services:
        raise RegistrationError(400, f"{uri} serves no services")
    problem = _out_of_range(discovery)
    if problem is not None:
        raise RegistrationError(400, f"discovery at {uri}/discover asks for {problem}")
    return discovery


def _out_of_range(discovery: Discovery) -> str | None:
    """The first handler option no retry or deadline can be computed from, if any."""
    for service in discovery.services:
        for handler in service.handlers:
            retry, timeouts = handler.retry, handler.timeouts
            where = f"{service.name}/{handler.name}"
            for name, value in (("retry.initial_interval_ms", retry.initial_interval_ms),
                                ("retry.max_interval_ms", retry.max_interval_ms),
                                ("timeouts.inactivity_ms", timeouts.inactivity_ms),
                                ("timeouts.total_ms", timeouts.total_ms)):
                if value is not None and not 0 <= value <= MAX_DURATION_MS:
                    return f"{where} {name} = {value}: not between 0 and {MAX_DURATION_MS} (100 years)"
            if retry.multiplier is not None and not retry.multiplier >= 1:  # NaN too
                return f"{where} retry.multiplier = {retry.multiplier}: less than 1"
    return None
