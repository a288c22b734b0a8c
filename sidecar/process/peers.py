"""The invoker's peers over the mesh: what one worker asks of the worker owning a partition.

Outgoing, :class:`MeshPeers` (the invoker's ``Peers``); incoming, the two mesh routes that
take a child to create and a call's result (:func:`serve_calls`), and those of the circuit
breakers, which worker 0 holds (:func:`serve_breakers`). Cancels and awakeable
resolutions go to the owner's admin and ingress routes, as a client's would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from handler_sdk.protocol import BreakerSpec, Failure

from ..ids import partition_of_id
from ..invoker import parse_awakeable_id
from ..invoker.breakers import Decision
from ..invoker.calls import Calls
from ..invoker.gates import BreakerOwner, Gates
from ..invoker.limits import Holder, UnknownLimit
from ..invoker.slots import LimitOwner, Slots
from .mesh import Handler, Mesh, answer_body
from .partitions import PartitionMap
from ..store.records import ChildSpec

log = logging.getLogger(__name__)


class CallResult(msgspec.Struct, array_like=True):
    caller_id: str
    index: int
    value: bytes | None
    failure: Failure | None


_encoder = msgspec.msgpack.Encoder()
_child_decoder = msgspec.msgpack.Decoder(ChildSpec)
_result_decoder = msgspec.msgpack.Decoder(CallResult)


class BreakerReport(msgspec.Struct, array_like=True):
    spec: BreakerSpec
    failed: bool


class BreakerOpened(msgspec.Struct, array_like=True):
    name: str
    epoch: int


class SlotRequest(msgspec.Struct, array_like=True):
    name: str
    holder: Holder


_spec_decoder = msgspec.msgpack.Decoder(BreakerSpec)
_slot_decoder = msgspec.msgpack.Decoder(SlotRequest)
_holder_decoder = msgspec.msgpack.Decoder(Holder)
_decision_decoder = msgspec.msgpack.Decoder(Decision)
_report_decoder = msgspec.msgpack.Decoder(BreakerReport)
_opened_decoder = msgspec.msgpack.Decoder(BreakerOpened)
#: The worker that holds the circuit breakers and the limit groups' slots (it also serves the
#: admin API, which lists them).
BREAKER_OWNER = 0


class MeshPeers:
    def __init__(self, mesh: Mesh, partitions: PartitionMap) -> None:
        self._mesh = mesh
        self._partitions = partitions

    def _owner(self, invocation_id: str) -> int:
        return self._partitions.owner(partition_of_id(invocation_id) or 0)

    async def hand_child(self, owner: int, spec: ChildSpec) -> None:
        answer = await self._mesh.forward(owner, "calls.adopt", "POST", "/", {}, CIMultiDict(), _encoder.encode(spec))
        if answer.status != 200:
            raise ConnectionError(f"worker {owner} did not take the call: {answer.status}")

    async def hand_result(self, owner: int, caller_id: str, index: int, value: bytes | None,
                          failure: Failure | None) -> None:
        body = _encoder.encode(CallResult(caller_id, index, value, failure))
        await self._mesh.forward(owner, "calls.result", "POST", "/", {}, CIMultiDict(), body)

    async def cancel(self, invocation_id: str) -> None:
        owner = self._owner(invocation_id)
        try:
            await self._mesh.forward(owner, "admin.invocation", "POST", f"/invocations/{invocation_id}/cancel", {},
                                     CIMultiDict(), b"")
        except ConnectionError as exc:
            log.warning("could not cancel callee %s on worker %d: %s", invocation_id, owner, exc)

    async def resolve_awakeable(self, awakeable_id: str, value: bytes | None, failure: Failure | None) -> None:
        action, body = ("resolve", value or b"null") if failure is None else ("reject", failure.message.encode())
        invocation_id, _ = parse_awakeable_id(awakeable_id)
        answer = await self._mesh.forward(self._owner(invocation_id), "ingress.awakeable", "POST",
                                          f"{awakeable_id}/{action}", {}, CIMultiDict(), body)
        if answer.status == 503:
            raise ConnectionError(f"the worker owning {awakeable_id} answered 503")
        if answer.status >= 400:  # not found, already completed: delivered as well as it can be
            log.info("awakeable %s not completed by a handler: %s", awakeable_id, answer.status)


    async def ask_breaker(self, spec: BreakerSpec) -> Decision:
        answer = await self._mesh.forward(BREAKER_OWNER, "breakers.ask", "POST", "/", {}, CIMultiDict(),
                                          _encoder.encode(spec))
        if answer.status != 200:
            raise ConnectionError(f"worker {BREAKER_OWNER} did not answer for breaker {spec.name}: {answer.status}")
        return _decision_decoder.decode(answer_body(answer))

    def report_breaker(self, spec: BreakerSpec, failed: bool) -> None:
        self._tell(BREAKER_OWNER, "breakers.report", _encoder.encode(BreakerReport(spec, failed)))

    def revoke_leases(self, name: str, epoch: int) -> None:
        body = _encoder.encode(BreakerOpened(name, epoch))
        for index in self._mesh.others():
            self._tell(index, "breakers.revoke", body)

    async def acquire_slot(self, name: str, holder: Holder) -> bool:
        answer = await self._mesh.forward(BREAKER_OWNER, "limits.acquire", "POST", "/", {}, CIMultiDict(),
                                          _encoder.encode(SlotRequest(name, holder)))
        body = msgspec.json.decode(answer_body(answer))
        if answer.status == 400:
            raise UnknownLimit(str(body.get("message", "")))  # as worker 0 worded it
        if answer.status != 200:
            raise ConnectionError(f"worker {BREAKER_OWNER} did not answer for limit {name}: {answer.status}")
        return bool(body["granted"])

    def release_slot(self, name: str, holder: Holder) -> None:
        self._tell(BREAKER_OWNER, "limits.release", _encoder.encode(SlotRequest(name, holder)))

    def grant_slot(self, holder: Holder) -> None:
        self._tell(holder.worker, "limits.granted", _encoder.encode(holder))

    def _tell(self, index: int, kind: str, body: bytes) -> None:
        """Send worker ``index`` a message whose answer nobody waits for (a lost one is logged)."""
        async def send() -> None:
            try:
                await self._mesh.forward(index, kind, "POST", "/", {}, CIMultiDict(), body)
            except ConnectionError as exc:
                log.warning("could not tell worker %d %s: %s", index, kind, exc)
        self._mesh.spawn(send())


def _told(act: Callable[[bytes], None]) -> Handler:
    """A mesh route for a message whose answer nobody awaits: ``act`` on its body."""
    async def handle(method: str, path: str, query: object, headers: object, body: bytes) -> web.Response:
        act(body)
        return web.json_response({"done": True})
    return handle


def serve_breakers(mesh: Mesh, gates: Gates, board: BreakerOwner | None) -> None:
    """Worker 0 (``board``) answers the others' asks and reports; every worker takes revocations."""

    def revoke(body: bytes) -> None:
        opened = _opened_decoder.decode(body)
        gates.revoke(opened.name, opened.epoch)

    mesh.handlers["breakers.revoke"] = _told(revoke)
    if board is None:
        return
    owner = board

    async def ask(method: str, path: str, query: object, headers: object, body: bytes) -> web.Response:
        decision = await owner.ask(_spec_decoder.decode(body))
        return web.Response(body=_encoder.encode(decision), content_type="application/msgpack")

    def report(body: bytes) -> None:
        got = _report_decoder.decode(body)
        owner.report(got.spec, got.failed)

    mesh.handlers["breakers.ask"] = ask
    mesh.handlers["breakers.report"] = _told(report)


def serve_limits(mesh: Mesh, slots: Slots, board: LimitOwner | None) -> None:
    """Worker 0 (``board``) counts the others' slots; every worker takes the slots granted to it."""
    mesh.handlers["limits.granted"] = _told(lambda body: slots.granted(_holder_decoder.decode(body)))
    if board is None:
        return
    owner = board

    async def acquire(method: str, path: str, query: object, headers: object, body: bytes) -> web.Response:
        request = _slot_decoder.decode(body)
        try:
            return web.json_response({"granted": await owner.acquire(request.name, request.holder)})
        except UnknownLimit as exc:
            return web.json_response({"code": 400, "message": str(exc)}, status=400)

    def release(body: bytes) -> None:
        request = _slot_decoder.decode(body)
        owner.release(request.name, request.holder)

    mesh.handlers["limits.acquire"] = acquire
    mesh.handlers["limits.release"] = _told(release)


def serve_calls(mesh: Mesh, calls: Calls) -> None:
    """Take children and call results that other workers hand to this one."""

    async def adopt(method: str, path: str, query: object, headers: object, body: bytes) -> web.Response:
        await calls.adopt(_child_decoder.decode(body))
        return web.json_response({"adopted": True})

    async def result(method: str, path: str, query: object, headers: object, body: bytes) -> web.Response:
        got = _result_decoder.decode(body)
        calls.complete_call(got.caller_id, got.index, got.value, got.failure)
        return web.json_response({"completed": True})

    mesh.handlers["calls.adopt"] = adopt
    mesh.handlers["calls.result"] = result
