"""The invoker's peers over the mesh: what one worker asks of the worker owning a partition.

Outgoing, :class:`MeshPeers` (the invoker's ``Peers``); incoming, the two mesh routes that
take a child to create and a call's result (:func:`serve_calls`). Cancels and awakeable
resolutions go to the owner's admin and ingress routes, as a client's would.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from handler_sdk.protocol import Failure

from ..ids import partition_of_id
from ..invoker import parse_awakeable_id
from ..invoker.calls import Calls
from .mesh import Mesh
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
