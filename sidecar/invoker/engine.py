"""The invoker: turns accepted requests into journaled, retried, exactly-once invocations.

This module only assembles it. Each part owns its state and is handed, in its constructor, the
narrow interfaces of the parts it needs (``typing.Protocol`` where it calls back):

- ``table``: the live invocations, key locks, idempotency slots in flight, inbox clock;
- ``lifecycle``: one invocation's life, from ``submit`` to the hand-over of its key (read it first);
- ``frames``: what each frame an attempt sends does;
- ``gates``, ``slots``: a step's leave to run (circuit breakers and limit groups, whose ``board``
  and ``limits`` worker 0 holds);
- ``waits``, ``calls``, ``promises``, ``resolutions``: what completes a journal entry;
- ``operations``: kill, cancel, pause, resume, restart, purge;
- ``queries``: outcomes, reasons, event pages;
- ``state_edits``: operators' state writes, in their key's line;
- ``webhooks``: the receivers' deliveries (``sidecar.webhooks``), fed by the lifecycle's outbox.

``peers`` reaches the other workers where they share the partitions; ``None`` in one process.
``links`` opens links to handler deployments (tests give links of their own).
docs/architecture.md walks one invocation through these parts.
"""

from __future__ import annotations

import aiohttp

from handler_sdk.protocol import ToSidecar

from ..cli.config import Settings
from ..ids import IdGenerator
from ..metrics import Metrics
from ..process.partitions import PartitionMap
from ..transport.registry import Registry
from ..transport.signing import UNSIGNED, Signer
from ..store import InvocationRecord, Store, StoreError
from ..tracing import Tracing
from .background import Background
from .breakers import BreakerBoard
from .calls import Calls
from .deployment_links import DeploymentLinks, LinkSource
from .events import EventStreams
from .factory import RecordFactory
from .frames import FrameHandler
from .gates import BreakerOwner, Gates, RemoteBreakers, RemoteLimits
from .limits import Holder, LimitBoard
from .growth import GrowthWatch
from .housekeeping import Housekeeping
from .lifecycle import Lifecycle
from .live import Attempt
from .operations import OperatorActions
from .peers import Peers
from .promises import Promises
from .queries import InvocationQueries
from .recovery import recover
from .resolutions import Resolutions
from .slots import LimitOwner, Slots
from .state_edits import StateEdits
from .state_in_flight import StateInFlight
from .table import InvocationTable
from .waits import DurableWaits
from .webhooks import WebhookOutbox
from ..webhooks.delivery import Webhooks
from ..webhooks.messages import parse_events


class Invoker:
    def __init__(
        self, *, store: Store, registry: Registry, settings: Settings, http: aiohttp.ClientSession, ids: IdGenerator,
        partitions: PartitionMap, metrics: Metrics, peers: Peers | None = None, links: LinkSource | None = None,
        signer: Signer = UNSIGNED,
        tracing: Tracing | None = None,
    ) -> None:
        self._store = store
        self._tracing = tracing or Tracing(None)
        self._partitions = partitions
        self._peers = peers
        self._background = Background()
        self.table = InvocationTable(store)
        self.events = EventStreams()
        self.links = links or DeploymentLinks(registry, http, settings, self._background, signer)
        factory = RecordFactory(ids, partitions, settings, self._tracing)
        state_in_flight = StateInFlight()
        self.state_edits = StateEdits(store, self.table.keys, state_in_flight, self.table.active,
                                      metrics.state_edits_waiting)
        growth = GrowthWatch(journal_limit=settings.warn_journal_bytes, state_limit=settings.warn_state_bytes,
                             metrics=metrics, on_warning=self.events.changed)
        self.webhooks = Webhooks(settings=settings, store=store, owns=partitions.owns_invocation, metrics=metrics,
                                 spawn=self._background.spawn)
        outbox = WebhookOutbox(store=store, tags=self.webhooks.tags, events=parse_events(settings.webhook_events),
                               clock=self.table.inbox_clock, on_filed=self.webhooks.filed)
        self.lifecycle = Lifecycle(
            store=store, table=self.table, factory=factory, links=self.links, state_edits=self.state_edits,
            partitions=partitions, settings=settings, metrics=metrics, background=self._background,
            on_frame=self._on_frame, on_end=self._on_end, growth=growth, webhooks=outbox,
            tracing=self._tracing)
        self.waits = DurableWaits(store, self.table, self.lifecycle.resume)
        self.promises = Promises(store, self.table, self.waits)
        self.resolutions = Resolutions(store=store, waits=self.waits, partitions=partitions, peers=peers,
                                       background=self._background)
        self.calls = Calls(store=store, registry=registry, partitions=partitions, table=self.table, factory=factory,
                           creation=self.lifecycle, completer=self.waits, background=self._background, peers=peers)
        #: The circuit breakers' state and the limit groups' slots, held by worker 0 (None in the
        #: others, which ask it).
        self.board: BreakerBoard | None = None
        self.limits: LimitBoard | None = None
        breakers: BreakerOwner
        limits: LimitOwner
        if peers is None or partitions.index == 0:
            breakers = self.board = BreakerBoard(metrics.set_breaker_open, self._breaker_opened)
            limits = self.limits = LimitBoard(settings.limits, self._slot_granted, metrics.set_limit_counts)
        else:
            breakers, limits = RemoteBreakers(peers), RemoteLimits(peers)
        self.slots = Slots(owner=limits, worker=partitions.index, steering=self.lifecycle, background=self._background)
        self.gates = Gates(breakers=breakers, slots=self.slots, backoff=self.lifecycle, background=self._background)
        self.frames = FrameHandler(
            store=store, outcomes=self.lifecycle, calls=self.calls, promises=self.promises, waits=self.waits,
            resolutions=self.resolutions, events=self.events, state_in_flight=state_in_flight, metrics=metrics,
            gates=self.gates, max_payload_bytes=settings.max_payload_bytes, growth=growth)
        self.operations = OperatorActions(
            store=store, table=self.table, steering=self.lifecycle, registry=registry, factory=factory,
            promises=self.promises, partitions=partitions, peers=peers, background=self._background)
        self.queries = InvocationQueries(store, self.table, self.events)
        self._housekeeping = Housekeeping(
            store=store, table=self.table, failures=self.lifecycle, purger=self.operations, partitions=partitions,
            settings=settings, metrics=metrics, pending_timers=self.waits.pending_timers)

    def _on_frame(self, attempt: Attempt, message: ToSidecar) -> None:
        self.frames.on_message(attempt, message)

    def _breaker_opened(self, name: str, epoch: int) -> None:
        self.gates.revoke(name, epoch)
        if self._peers is not None:
            self._peers.revoke_leases(name, epoch)

    def _slot_granted(self, holder: Holder) -> None:
        if holder.worker == self._partitions.index:
            self.slots.granted(holder)
        elif self._peers is not None:
            self._peers.grant_slot(holder)

    def _on_end(self, record: InvocationRecord) -> None:
        self.calls.child_finished(record)
        self.events.finished(record.id)
        self._tracing.finished(record)

    def start(self) -> None:
        """Recover unfinished invocations, then watch for silent handlers and expired results."""
        owns = self._partitions.owns_invocation
        self.webhooks.start()
        recover(self._store, self.table, self._partitions, self.lifecycle)
        self.waits.recover(owns)
        self.resolutions.recover(owns)
        self.calls.recover(owns)
        self._background.spawn(self._housekeeping.watch_inactivity())
        self._background.spawn(self._housekeeping.sweep_retention())

    async def close(self, reason: StoreError | None = None) -> None:
        """Stop every attempt, let waiting callers go (told ``reason``: the store was lost); once."""
        if self.lifecycle.closing:
            return
        self.lifecycle.closing = True
        self.events.close()
        await self._background.close()
        await self.webhooks.close()
        for live in self.table.active.values():
            if live.retry_handle is not None:
                live.retry_handle.cancel()
            for waiter in live.waiters:
                if reason is None:
                    waiter.cancel()
                elif not waiter.done():
                    waiter.set_exception(reason)
        await self.links.close()
