"""Links to deployments in which the test plays the handler: no handler process, no HTTP.

Every frame the invoker sends is decoded with the protocol's decoder and kept, so that a test can
await "the next Start for this invocation" and answer it, frame by frame, as a handler would.
A deployment can be taken down (its link is lost, connecting fails) and brought up again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from handler_sdk.protocol import RetrySpec, Start, ToHandler, ToSidecar, encoder, to_handler_decoder, to_sidecar_decoder
from sidecar.transport.held_blobs import HeldBlobs
from sidecar.cli.config import Settings
from sidecar.invoker.background import Background
from sidecar.invoker.deployment_links import Pool
from sidecar.invoker.reachability import Prober
from sidecar.transport.links import LinkError, Session, deliver
from sidecar.transport.registry import Registry
from sidecar.invoker.retry import RetryPolicy
from sidecar.store import InvocationRecord

#: How long a test waits for a frame it expects before it fails.
FRAME_DEADLINE_S = 5.0

F = TypeVar("F", bound=ToHandler)


@dataclass
class Sent(Generic[F]):
    """A frame the invoker sent, and the link it went over (where the handler answers)."""

    link: FakeLink
    frame: F
    taken: bool = field(default=False, compare=False)


class FakeLink:
    """One open link to a deployment, as the invoker's attempts see it (a ``Carrier``)."""

    def __init__(self, links: FakeLinks) -> None:
        self._links = links
        self.sessions: dict[str, Session] = {}
        self.held: HeldBlobs | None = HeldBlobs()
        self.closed = False
        #: What the handler sent for invocations this link does not carry: dropped, as a real link does.
        self.strays: list[ToSidecar] = []

    def send(self, frame: bytes) -> None:
        if not self.closed:
            self._links.record(Sent(self, to_handler_decoder.decode(frame)))

    def answer(self, message: ToSidecar) -> None:
        """Send ``message`` as the handler: over the wire's encoding, to the attempt it names."""
        decoded = to_sidecar_decoder.decode(encoder.encode(message))
        session = self.sessions.get(decoded.invocation_id)
        if session is None or self.closed:
            self.strays.append(decoded)
        else:
            deliver(session, decoded)

    def lose(self, reason: str) -> None:
        """The connection is gone: every attempt on it fails."""
        if self.closed:
            return
        self.closed = True
        sessions, self.sessions = self.sessions, {}
        for session in sessions.values():
            session.fail(reason)


class FakePool:
    """One deployment's links: one open link while it is up; connecting fails while it is down."""

    def __init__(self, deployment_id: str, links: FakeLinks) -> None:
        self.deployment_id = deployment_id
        self._links = links
        self.link: FakeLink | None = FakeLink(links)
        #: Attempts to connect (``acquire``), by invocations and by the prober.
        self.knocks = 0

    def ready(self) -> FakeLink | None:
        return self.link

    async def acquire(self) -> FakeLink:
        self.knocks += 1
        if self.link is None:
            raise LinkError(f"cannot connect to deployment {self.deployment_id}: it is down")
        return self.link

    def go_down(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.lose("handler connection lost")

    def come_up(self) -> None:
        if self.link is None:
            self.link = FakeLink(self._links)

    async def close(self) -> None:
        if self.link is not None:
            self.link.lose("sidecar shutting down")


class FakeLinks:
    """A ``LinkSource``: a pool per registered deployment, and every frame sent over any of them.

    ``retry`` and ``inactivity_timeout_s`` apply to every invocation; they start from ``settings``
    and a test may set them."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self._registry = registry
        self.retry = RetryPolicy.resolve(RetrySpec(), settings)
        self.inactivity_s = settings.inactivity_timeout_s
        self._pools: dict[str, FakePool] = {}
        self._probers: dict[str, Prober] = {}
        self._background = Background()
        self.sent: list[Sent[ToHandler]] = []
        self._expecting: list[tuple[type, str, asyncio.Future[Sent[ToHandler]]]] = []

    # --- the LinkSource protocol --------------------------------------------------------------------

    def pool(self, deployment_id: str) -> FakePool | None:
        pool = self._pools.get(deployment_id)
        if pool is None and deployment_id in self._registry.deployments:
            pool = self._pools[deployment_id] = FakePool(deployment_id, self)
        return pool

    def prober(self, deployment_id: str, pool: Pool) -> Prober:
        prober = self._probers.get(deployment_id)
        if prober is None:
            prober = self._probers[deployment_id] = Prober(deployment_id, pool.acquire, self._background.spawn)
        return prober

    def retry_policy(self, record: InvocationRecord) -> RetryPolicy:
        return self.retry

    def inactivity_timeout_s(self, record: InvocationRecord) -> float:
        return self.inactivity_s

    def blob_refs(self, record: InvocationRecord) -> bool:
        return self._registry.blob_refs(record.deployment_id)

    def close_deleted(self) -> None:
        for deployment_id in [d for d in self._pools if d not in self._registry.deployments]:
            self._probers.pop(deployment_id, None)
            self._background.spawn(self._pools.pop(deployment_id).close())

    async def close(self) -> None:
        await self._background.close()
        await asyncio.gather(*(pool.close() for pool in self._pools.values()))

    # --- what the test sees -------------------------------------------------------------------------

    def record(self, sent: Sent[ToHandler]) -> None:
        self.sent.append(sent)
        for expected in self._expecting:
            kind, invocation_id, future = expected
            if not future.done() and type(sent.frame) is kind and sent.frame.invocation_id == invocation_id:
                sent.taken = True
                future.set_result(sent)
                self._expecting.remove(expected)
                return

    async def expect(self, kind: type[F], invocation_id: str, *, timeout: float = FRAME_DEADLINE_S) -> Sent[F]:
        """The first ``kind`` frame for ``invocation_id`` not expected before, once it is sent."""
        for sent in self.sent:
            if not sent.taken and type(sent.frame) is kind and sent.frame.invocation_id == invocation_id:
                sent.taken = True
                return sent  # type: ignore[return-value]
        future: asyncio.Future[Sent[ToHandler]] = asyncio.get_running_loop().create_future()
        expected = (kind, invocation_id, future)
        self._expecting.append(expected)
        try:
            return await asyncio.wait_for(future, timeout)  # type: ignore[return-value]
        except TimeoutError:
            raise AssertionError(f"no {kind.__name__} frame for {invocation_id} within {timeout:g} s; "
                                 f"sent so far: {self.frames(invocation_id)}") from None
        finally:
            if expected in self._expecting:
                self._expecting.remove(expected)

    def frames(self, invocation_id: str, kind: type[F] | None = None) -> list[F]:
        """Every frame sent for ``invocation_id`` so far (of ``kind`` only, if given), in order."""
        return [s.frame for s in self.sent  # type: ignore[misc]
                if s.frame.invocation_id == invocation_id and (kind is None or type(s.frame) is kind)]

    def started(self) -> list[str]:
        """The invocation of every Start sent so far, in the order they were sent."""
        return [s.frame.invocation_id for s in self.sent if type(s.frame) is Start]
