"""Deployments and the services they serve: discovery, registration, routing.

Deployments are immutable: registering a new one for a service routes *new* invocations to it,
while invocations already running stay pinned to the deployment they started on.
"""

from __future__ import annotations

import ipaddress
import re

import aiohttp
import msgspec
from yarl import URL

from handler_sdk.protocol import PROTOCOL_VERSION, Discovery, HandlerSpec, ServiceSpec, name_problem

from ..clock import now_ms
from ..ids import IdGenerator
from ..store import Changes, DeploymentRecord, Store
from ..store.records import TRANSPORTS
from .signing import UNSIGNED, Signer

_discovery_decoder = msgspec.json.Decoder(Discovery)
#: A discovery answer lists services and handlers: past this it is not one.
MAX_DISCOVERY_BYTES = 1024 * 1024
#: Connecting and each wait for bytes are short (a deployment answers /discover at once); the
#: whole exchange is bounded too, against an answer that trickles in.
_DISCOVERY_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=5, sock_read=5)
#: A deployment URI longer than this is a mistake, not an address.
MAX_URI_LENGTH = 2048
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")

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
    def __init__(self, store: Store, ids: IdGenerator, signer: Signer = UNSIGNED) -> None:
        self._store = store
        self._ids = ids
        self._signer = signer
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

    def blob_refs(self, deployment_id: str) -> bool:
        """Whether the deployment's handlers resolve blob references (an older SDK's do not)."""
        record = self.deployments.get(deployment_id)
        return record is not None and record.blob_refs

    async def register(
        self, uri: str, *, force: bool, http: aiohttp.ClientSession, transport: str = "websocket",
    ) -> tuple[DeploymentRecord, bool]:
        """Discover ``uri`` and register it. Returns the record and whether it is new."""
        uri = checked_uri(uri)
        if transport not in TRANSPORTS:
            raise RegistrationError(400, f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        discovery = await _discover(uri, http, self._signer)
        existing = next((d for d in self.deployments.values() if d.uri == uri), None)
        if existing is not None and (existing.services, existing.transport, existing.blob_refs) == (
                discovery.services, transport, discovery.blob_refs):
            return existing, False
        if existing is not None and not force:
            raise RegistrationError(409, f"a deployment at {uri} is already registered with other services or "
                                         "another transport; pass force to replace it")
        record = DeploymentRecord(
            id=existing.id if existing else self._ids.deployment_id(), uri=uri, services=discovery.services,
            created_ms=now_ms(), transport=transport, blob_refs=discovery.blob_refs,
        )
        changes = Changes()
        changes.put_deployment(record)
        await self._store.submit(changes)
        self._install(record)
        return record, True


def checked_uri(uri: str) -> str:
    """``uri`` without a trailing ``/`` once it is an absolute http(s) URI with a usable host:
    checked before discovery, so that a bad one is a clear 400, never a failure inside the client."""
    if len(uri) > MAX_URI_LENGTH:
        raise RegistrationError(400, f"deployment uri is too long: {len(uri)} characters, at most {MAX_URI_LENGTH}")
    try:
        url = URL(uri)
    except ValueError as exc:
        raise RegistrationError(400, f"deployment uri {uri!r} is not a valid uri: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise RegistrationError(400, f"deployment uri must be http:// or https://, not {uri!r}")
    if url.raw_query_string or url.raw_fragment or url.raw_user is not None:
        raise RegistrationError(400, f"deployment uri {uri!r} may not have a query, a fragment or credentials")
    if not url.raw_host:
        raise RegistrationError(400, f"deployment uri {uri!r} has no host")
    problem = _host_problem(url.raw_host)
    if problem:
        raise RegistrationError(400, f"deployment uri {uri!r}: host {problem}")
    return uri.rstrip("/")


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if len(host) > 253:
        return f"name is {len(host)} characters long, at most 253"
    bad = next((label for label in host.rstrip(".").split(".") if not _HOST_LABEL.fullmatch(label)), None)
    if bad is not None:
        return (f"{host[:100]!r} is not a valid host name: each dot-separated label is 1 to 63 letters, "
                f"digits, '-' or '_', and {bad[:70]!r} is not")
    return None


async def _discover(uri: str, http: aiohttp.ClientSession, signer: Signer) -> Discovery:
    url = f"{uri}/discover"
    try:
        async with http.get(url, timeout=_DISCOVERY_TIMEOUT, allow_redirects=False,
                            headers=signer.headers("GET", URL(url).raw_path)) as response:
            if 300 <= response.status < 400:
                raise RegistrationError(400, f"discovery at {url} answered {response.status}, a redirect to "
                                             f"{response.headers.get('Location', '?')[:200]!r}: discovery does not "
                                             "follow redirects; register the final uri")
            if response.status == 401:
                raise _refused(uri, await _bounded_body(url, response), signer)
            if response.status != 200:
                raise RegistrationError(400, f"discovery at {url} answered {response.status}")
            body = await _bounded_body(url, response)
    except aiohttp.ConnectionTimeoutError:
        raise RegistrationError(400, f"cannot reach {url}: timed out connecting after "
                                     f"{_DISCOVERY_TIMEOUT.sock_connect:g} s") from None
    except aiohttp.SocketTimeoutError:
        raise RegistrationError(400, f"cannot reach {url}: timed out reading the answer (nothing for "
                                     f"{_DISCOVERY_TIMEOUT.sock_read:g} s)") from None
    except TimeoutError:
        raise RegistrationError(400, f"cannot reach {url}: timed out, no complete answer within "
                                     f"{_DISCOVERY_TIMEOUT.total:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise RegistrationError(400, f"cannot reach {url}: {exc or type(exc).__name__}") from None
    try:
        discovery = _discovery_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RegistrationError(400, f"discovery at {url} is malformed: {exc}") from None
    if discovery.protocol != PROTOCOL_VERSION:
        raise RegistrationError(400, f"{uri} speaks protocol {discovery.protocol}; this sidecar speaks {PROTOCOL_VERSION}")
    if not discovery.services:
        raise RegistrationError(400, f"{uri} serves no services")
    for service in discovery.services:
        for what, name in [("service", service.name), *((f"{service.name} handler", h.name) for h in service.handlers)]:
            problem = name_problem(name)
            if problem is not None:
                raise RegistrationError(400, f"discovery at {url}: {what} {problem}")
    problem = _out_of_range(discovery)
    if problem is not None:
        raise RegistrationError(400, f"discovery at {url} asks for {problem}")
    return discovery


def _refused(uri: str, body: bytes, signer: Signer) -> RegistrationError:
    """A 403 naming why the handler service refused the sidecar's request (its 401's message):
    not a 400, which ``--register`` takes for a service still starting and tries again."""
    try:
        why = str(msgspec.json.decode(body, type=dict[str, object])["message"])
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, RecursionError):
        why = body.decode(errors="replace") or "401 with no reason given"
    hint = "" if signer.signs else "; this sidecar signs nothing: start it with --signing-key FILE"
    return RegistrationError(403, f"the handler service at {uri} refused the sidecar's signature: {why[:500]}{hint}")


async def _bounded_body(url: str, response: aiohttp.ClientResponse) -> bytes:
    """The body, refused as soon as it is past :data:`MAX_DISCOVERY_BYTES`."""
    if (response.content_length or 0) > MAX_DISCOVERY_BYTES:
        raise RegistrationError(400, f"discovery at {url} is {response.content_length} bytes: at most 1 MiB")
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > MAX_DISCOVERY_BYTES:
            raise RegistrationError(400, f"discovery at {url} is larger than 1 MiB: refused")
    return bytes(body)


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
