"""The links to each registered deployment, and its prober while it is down; and what the
deployment's handler specs say of attempts (retry policy, inactivity timeout)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp

from handler_sdk.protocol import RetrySpec

from ..cli.config import Settings
from ..transport.request_response import InvokePool
from ..transport.links import FRAME_HEADROOM, Carrier, DeploymentPool
from ..transport.registry import Registry
from ..transport.signing import Signer
from .retry import RetryPolicy
from ..store import InvocationRecord
from .background import Background
from .reachability import Prober

class Pool(Protocol):
    """The links to one deployment: WebSocket links, or request-response ones."""

    def ready(self) -> Carrier | None:
        """An open link, if one is (the hot path: no await)."""

    async def acquire(self) -> Carrier:
        """An open link, opening one if need be; LinkError if the deployment cannot be reached."""

    async def close(self) -> None: ...


class LinkSource(Protocol):
    """What the lifecycle needs to start attempts (tests give their own links)."""

    def pool(self, deployment_id: str) -> Pool | None: ...

    def prober(self, deployment_id: str, pool: Pool) -> Prober: ...

    def retry_policy(self, record: InvocationRecord) -> RetryPolicy: ...

    def inactivity_timeout_s(self, record: InvocationRecord) -> float: ...

    def blob_refs(self, record: InvocationRecord) -> bool:
        """Whether the handler of ``record``'s deployment takes blob references."""

    def close_deleted(self) -> None: ...

    async def close(self) -> None: ...


class DeploymentLinks:
    def __init__(self, registry: Registry, http: aiohttp.ClientSession, settings: Settings,
                 background: Background, signer: Signer) -> None:
        self._registry = registry
        self._signer = signer
        self._http = http
        self._settings = settings
        self._background = background
        self._pools: dict[str, DeploymentPool | InvokePool] = {}
        self._probers: dict[str, Prober] = {}

    def pool(self, deployment_id: str) -> Pool | None:
        """The links to a deployment; None if it is not registered (any more)."""
        pool = self._pools.get(deployment_id)
        if pool is None:
            record = self._registry.deployments.get(deployment_id) or self._registry.reload().deployments.get(
                deployment_id)
            if record is None:
                return None
            pool = self._pools[deployment_id] = InvokePool(record.uri, self._http, self._signer) \
                if record.transport == "request-response" \
                else DeploymentPool(record.uri, self._http, self._settings.connections_per_deployment,
                                    max_frame_bytes=self._settings.max_payload_bytes + FRAME_HEADROOM,
                                    signer=self._signer)
        return pool

    def prober(self, deployment_id: str, pool: Pool) -> Prober:
        """The one prober of ``deployment_id``, which invocations wait on while it is down."""
        prober = self._probers.get(deployment_id)
        if prober is None:
            prober = self._probers[deployment_id] = Prober(deployment_id, pool.acquire, self._background.spawn)
        return prober

    def close_deleted(self) -> None:
        """Close the links to deployments that are not registered any more."""
        for deployment_id in [d for d in self._pools if d not in self._registry.deployments]:
            self._probers.pop(deployment_id, None)
            self._background.spawn(self._pools.pop(deployment_id).close())

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self._pools.values()), return_exceptions=True)

    # --- what the handler's deployment says of its attempts ------------------------------------------

    def retry_policy(self, record: InvocationRecord) -> RetryPolicy:
        spec = self._registry.handler_spec(record.deployment_id, record.service, record.handler)
        return RetryPolicy.resolve(spec.retry if spec else RetrySpec(), self._settings)

    def blob_refs(self, record: InvocationRecord) -> bool:
        return self._registry.blob_refs(record.deployment_id)

    def inactivity_timeout_s(self, record: InvocationRecord) -> float:
        spec = self._registry.handler_spec(record.deployment_id, record.service, record.handler)
        if spec is not None and spec.timeouts.inactivity_ms is not None:
            return spec.timeouts.inactivity_ms / 1000
        return self._settings.inactivity_timeout_s
