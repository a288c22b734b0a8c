"""``Client``: calls, sends, attaches, awakeables and event streams over the sidecar's ingress
(DESIGN §3), by target string; ``client.service()``, ``.object()`` and ``.workflow()`` give the
typed form (``_handles``)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

import msgspec

from .._arguments import delay_ms
from .._definition import Service, VirtualObject, Workflow, positive_seconds
from .._spending import checked_cost
from .._steps import decoder_for
from ._codec import Target, by_key, check_identifier, decode_output, encode_input
from ._errors import ClientError
from ._events import EventStream
from ._handles import ObjectHandle, ServiceHandle, WorkflowHandle
from ._transport import Transport

T = TypeVar("T")
O = TypeVar("O")
#: A receipt of an ``int`` output is a receipt of an ``object`` one.
O_co = TypeVar("O_co", covariant=True)
#: Seconds, or a ``timedelta``.
Seconds = float | datetime.timedelta
_ANY = decoder_for(Any)


class SendReceipt(Generic[O_co]):
    """What a send returns: the invocation's ID, and whether this send started it (``Accepted``)
    or an earlier one with the same idempotency key did (``PreviouslyAccepted``). Pass it to
    ``attach``, ``output`` or ``events``; from a typed send, ``attach`` returns the handler's type."""

    __slots__ = ("invocation_id", "status", "_output")

    def __init__(self, invocation_id: str, status: Literal["Accepted", "PreviouslyAccepted"],
                 output: msgspec.json.Decoder[O_co]) -> None:
        self.invocation_id = invocation_id
        self.status = status
        self._output = output

    @property
    def previously_accepted(self) -> bool:
        return self.status == "PreviouslyAccepted"

    def __repr__(self) -> str:
        return f"SendReceipt({self.invocation_id!r}, {self.status!r})"


class _Accepted(msgspec.Struct):
    invocationId: str
    status: Literal["Accepted", "PreviouslyAccepted"]


_accepted = msgspec.json.Decoder(_Accepted)


class Client:
    """A caller of the sidecar's ingress at ``url``: ``async with Client(url) as client: ...``.

    Every method checks what it is given before sending anything (a bad target, an argument
    msgspec cannot encode, an identifier over 1,024 bytes: ``ValueError`` or ``TypeError``) and
    raises a ``ClientError`` subclass for an error answer. ``overload_retries``: how many times a
    429/503 refusal (nothing accepted) is retried after its ``Retry-After``, for requests that
    cannot run twice: GETs, and calls and sends with an ``idempotency_key``; 0: never.
    """

    def __init__(self, url: str = "http://127.0.0.1:8080", *, overload_retries: int = 3) -> None:
        self._transport = Transport(url, overload_retries=overload_retries)

    @property
    def url(self) -> str:
        return self._transport.base_url

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (``async with`` does it on leaving)."""
        await self._transport.close()

    # --- typed handles -------------------------------------------------------------------------

    def service(self, definition: Service) -> ServiceHandle:
        """Typed calls to ``definition``'s handlers: ``await client.service(steps).call(run, 7)``."""
        return ServiceHandle(self, definition)

    def object(self, definition: VirtualObject, key: str) -> ObjectHandle:
        """Typed calls to ``definition``'s handlers on ``key``: ``.call(add, 5)``."""
        return ObjectHandle(self, definition, key)

    def workflow(self, definition: Workflow, key: str) -> WorkflowHandle:
        """Typed calls to a workflow on ``key``, and its ``run``'s result: ``.attach(run)``."""
        return WorkflowHandle(self, definition, key)

    # --- calls and sends by target string -------------------------------------------------------

    @overload
    async def call(self, target: str, arg: Any = None, *, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None, budget: float | None = None,
                   timeout: Seconds | None = None) -> Any: ...

    @overload
    async def call(self, target: str, arg: Any = None, *, type: type[T], idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None, budget: float | None = None,
                   timeout: Seconds | None = None) -> T: ...

    async def call(self, target: str, arg: Any = None, *, type: Any = Any, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None, budget: float | None = None,
                   timeout: Seconds | None = None) -> Any:
        """Call ``target`` (``Service/handler`` or ``Object/key/handler``) with ``arg`` (JSON-encoded
        by msgspec; ``None``: no input) and wait for its output, decoded as ``type`` (default: any
        JSON). ``idempotency_key``: the same target and key run once, and a repeat gets the same
        result; ``headers`` reach the handler (``ctx.headers``); ``budget`` caps what its steps may
        spend (``x-budget``); ``timeout`` (seconds) bounds the wait, not the invocation."""
        parsed = Target.parse(target)
        return await self._call(parsed, encode_input(parsed, arg), decoder_for(type), idempotency_key=idempotency_key,
                                headers=headers, budget=budget, timeout=timeout)

    async def send(self, target: str, arg: Any = None, *, delay: Seconds | None = None,
                   idempotency_key: str | None = None, headers: Mapping[str, str] | None = None,
                   budget: float | None = None, timeout: Seconds | None = None) -> SendReceipt[Any]:
        """Start ``target`` without waiting, ``delay`` from now (durably: it survives restarts);
        options as for ``call``. Returns once the sidecar has accepted it."""
        parsed = Target.parse(target)
        return await self._send(parsed, encode_input(parsed, arg), _ANY, delay=delay, idempotency_key=idempotency_key,
                                headers=headers, budget=budget, timeout=timeout)

    # --- results --------------------------------------------------------------------------------

    @overload
    async def attach(self, invocation: SendReceipt[O], *, timeout: Seconds | None = None) -> O: ...

    @overload
    async def attach(self, invocation: str, *, timeout: Seconds | None = None) -> Any: ...

    @overload
    async def attach(self, invocation: str, *, type: type[T], timeout: Seconds | None = None) -> T: ...

    async def attach(self, invocation: str | SendReceipt[Any], *, type: Any = Any,
                     timeout: Seconds | None = None) -> Any:
        """Wait for an invocation's output (by its ID or receipt); raises as ``call`` would."""
        invocation_id, decoder = _invocation(invocation, type)
        return await self._result(["restate", "invocation", invocation_id, "attach"], decoder, invocation_id,
                                  timeout=timeout)

    @overload
    async def output(self, invocation: SendReceipt[O]) -> O: ...

    @overload
    async def output(self, invocation: str) -> Any: ...

    @overload
    async def output(self, invocation: str, *, type: type[T]) -> T: ...

    async def output(self, invocation: str | SendReceipt[Any], *, type: Any = Any) -> Any:
        """An invocation's output if it has finished; ``NotReady`` (470) while it has not."""
        invocation_id, decoder = _invocation(invocation, type)
        return await self._result(["restate", "invocation", invocation_id, "output"], decoder, invocation_id)

    @overload
    async def attach_by_key(self, target: str, idempotency_key: str, *, timeout: Seconds | None = None) -> Any: ...

    @overload
    async def attach_by_key(self, target: str, idempotency_key: str, *, type: type[T],
                            timeout: Seconds | None = None) -> T: ...

    async def attach_by_key(self, target: str, idempotency_key: str, *, type: Any = Any,
                            timeout: Seconds | None = None) -> Any:
        """``attach`` to the invocation that ``target`` and ``idempotency_key`` started."""
        return await self._result(by_key(Target.parse(target), idempotency_key, "attach"), decoder_for(type),
                                  target, timeout=timeout)

    @overload
    async def output_by_key(self, target: str, idempotency_key: str) -> Any: ...

    @overload
    async def output_by_key(self, target: str, idempotency_key: str, *, type: type[T]) -> T: ...

    async def output_by_key(self, target: str, idempotency_key: str, *, type: Any = Any) -> Any:
        """``output`` of the invocation that ``target`` and ``idempotency_key`` started."""
        return await self._result(by_key(Target.parse(target), idempotency_key, "output"), decoder_for(type), target)

    @overload
    async def workflow_attach(self, name: str, key: str, *, timeout: Seconds | None = None) -> Any: ...

    @overload
    async def workflow_attach(self, name: str, key: str, *, type: type[T], timeout: Seconds | None = None) -> T: ...

    async def workflow_attach(self, name: str, key: str, *, type: Any = Any, timeout: Seconds | None = None) -> Any:
        """Wait for the output of workflow ``name``'s run on ``key``; ``NotFound`` if it has not run."""
        return await self._result(_workflow(name, key, "attach"), decoder_for(type), f"{name}/{key}", timeout=timeout)

    @overload
    async def workflow_output(self, name: str, key: str) -> Any: ...

    @overload
    async def workflow_output(self, name: str, key: str, *, type: type[T]) -> T: ...

    async def workflow_output(self, name: str, key: str, *, type: Any = Any) -> Any:
        """The output of workflow ``name``'s run on ``key`` if it has finished; else ``NotReady``."""
        return await self._result(_workflow(name, key, "output"), decoder_for(type), f"{name}/{key}")

    # --- awakeables and events ------------------------------------------------------------------

    async def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        """Complete the awakeable with ``value`` (JSON-encoded): the handler awaiting it goes on.
        ``NotFound`` for an unknown one, ``Conflict`` if it was already completed."""
        check_identifier("awakeable ID", awakeable_id)
        try:
            body = msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"awakeable {awakeable_id}: the value cannot be encoded as JSON: {exc}") from None
        await self._transport.request("POST", ["restate", "awakeables", awakeable_id, "resolve"], body=body,
                                      headers={"content-type": "application/json"}, idempotent=False)

    async def reject_awakeable(self, awakeable_id: str, reason: str) -> None:
        """Fail the awakeable: the handler awaiting it gets a ``TerminalError`` with ``reason``."""
        check_identifier("awakeable ID", awakeable_id)
        if not isinstance(reason, str):
            raise TypeError(f"the reason must be a string, got {reason!r}")
        await self._transport.request("POST", ["restate", "awakeables", awakeable_id, "reject"],
                                      body=reason.encode(), headers={"content-type": "text/plain"}, idempotent=False)

    def events(self, invocation: str | SendReceipt[Any], *, last_event_id: str | None = None,
               max_reconnects: int = 10) -> EventStream:
        """The invocation's events as they come: ``Milestone``, ``Token`` and ``GrowthWarning``
        events, then its ``End``, after which the iteration stops. A dropped connection is
        reopened with ``Last-Event-ID`` (so nothing is repeated or skipped), up to
        ``max_reconnects`` times in a row with growing pauses; then ``ConnectionFailed``.
        ``last_event_id``: start after that event (a stream's ``last_event_id``)."""
        invocation_id, _ = _invocation(invocation, Any)
        return EventStream(self._transport, invocation_id, last_event_id=last_event_id, max_reconnects=max_reconnects)

    # --- shared by the string and the typed forms ------------------------------------------------

    async def _call(self, target: Target, body: bytes, decoder: msgspec.json.Decoder[Any], *,
                    idempotency_key: str | None, headers: Mapping[str, str] | None, budget: float | None,
                    timeout: Seconds | None) -> Any:
        reply = await self._transport.request(
            "POST", ["restate", "call", *target.parts()], body=body,
            headers=_headers(body, idempotency_key, headers, budget), idempotent=idempotency_key is not None,
            timeout=positive_seconds("timeout", timeout))
        return decode_output(decoder, reply.body, str(target), reply.headers.get("x-restate-id"))

    async def _send(self, target: Target, body: bytes, decoder: msgspec.json.Decoder[O], *,
                    delay: Seconds | None, idempotency_key: str | None, headers: Mapping[str, str] | None,
                    budget: float | None, timeout: Seconds | None) -> SendReceipt[O]:
        # A delay in the past is now, as for ctx.sleep; delay_ms refuses one past the sidecar's limit.
        delay_in_ms = 0 if delay is None else max(0, delay_ms(delay))
        reply = await self._transport.request(
            "POST", ["restate", "send", *target.parts()], body=body,
            headers=_headers(body, idempotency_key, headers, budget),
            query={"delay": f"{delay_in_ms}ms"} if delay_in_ms else None,
            idempotent=idempotency_key is not None, timeout=positive_seconds("timeout", timeout))
        try:
            accepted = _accepted.decode(reply.body)
        except msgspec.DecodeError as exc:
            raise ClientError(reply.status, f"{target}: the answer to a send is not {{invocationId, status}}: {exc}",
                              invocation_id=reply.headers.get("x-restate-id")) from None
        return SendReceipt(accepted.invocationId, accepted.status, decoder)

    async def _result(self, parts: list[str], decoder: msgspec.json.Decoder[Any], what: str, *,
                      timeout: Seconds | None = None) -> Any:
        reply = await self._transport.request("GET", parts, idempotent=True,
                                              timeout=positive_seconds("timeout", timeout))
        return decode_output(decoder, reply.body, what, reply.headers.get("x-restate-id"))


def _headers(body: bytes, idempotency_key: str | None, headers: Mapping[str, str] | None,
             budget: float | None) -> dict[str, str]:
    sent = {str(name).lower(): value for name, value in (headers or {}).items()}
    for name, value in sent.items():
        if not isinstance(value, str):
            raise TypeError(f"header {name!r} must be a string, got {value!r}")
    if body:
        sent.setdefault("content-type", "application/json")
    if idempotency_key is not None:
        check_identifier("idempotency key", idempotency_key)
        sent["idempotency-key"] = idempotency_key
    if budget is not None:
        sent["x-budget"] = repr(checked_cost(budget, "budget="))
    return sent


def _invocation(invocation: str | SendReceipt[Any], type: Any) -> tuple[str, msgspec.json.Decoder[Any]]:
    if isinstance(invocation, SendReceipt):
        return invocation.invocation_id, invocation._output
    check_identifier("invocation ID", invocation)
    if not invocation:
        raise ValueError("the invocation ID is empty")
    return invocation, decoder_for(type)



def _workflow(name: str, key: str, action: str) -> list[str]:
    check_identifier("workflow name", name)
    check_identifier("workflow key", key)
    if not name or not key:
        raise ValueError(f"a workflow is addressed by a name and a key, got {name!r} and {key!r}")
    return ["restate", "workflow", name, key, action]
