"""The typed form: ``client.object(counter, "alice").call(add, 5)``.

A handler is named by its function rather than by an attribute (``.add(5)``): a type checker
cannot see attributes that a definition collects at run time, but it sees the function's
signature, so ``mypy --strict`` catches a handler that does not exist (an undefined name), an
argument of the wrong type (the function's second parameter), a result used as the wrong type
(its return annotation), and a handler of the wrong kind (its context type: an object's handler
takes an ``ObjectContext``, which a service handle does not pass). At run time the handle checks
that the function is registered on its definition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .._definition import Service, VirtualObject, Workflow, _Definition
from ..context import Context, ObjectContext, WorkflowContext
from ._codec import HandlerCodec, Target, by_key, check_identifier, handler_codec

if TYPE_CHECKING:
    from ._client import Client, Seconds, SendReceipt

#: The context the handle's handlers may take (a handler may ask for less: a shared one's).
C = TypeVar("C", bound=Context)
I = TypeVar("I")
O = TypeVar("O")


class _Handle(Generic[C]):
    def __init__(self, client: Client, definition: _Definition, key: str | None) -> None:
        self._client = client
        self._definition = definition
        self._key = key

    def _target(self, handler: Callable[..., Any]) -> tuple[HandlerCodec, Target]:
        codec = handler_codec(self._definition, handler, keyed=self._key is not None)
        return codec, codec.target(self._key)

    @overload
    async def call(self, handler: Callable[[C], Awaitable[O]], /, *, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None, budget: float | None = None,
                   timeout: Seconds | None = None) -> O: ...

    @overload
    async def call(self, handler: Callable[[C, I], Awaitable[O]], arg: I, /, *, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None, budget: float | None = None,
                   timeout: Seconds | None = None) -> O: ...

    async def call(self, handler: Callable[..., Awaitable[Any]], /, *args: Any, idempotency_key: str | None = None,
                   headers: Mapping[str, str] | None = None, budget: float | None = None,
                   timeout: Seconds | None = None) -> Any:
        """Call ``handler`` with ``arg`` (none for a handler without a parameter) and wait for its
        output, decoded as its return annotation; options as for ``Client.call``."""
        codec, target = self._target(handler)
        return await self._client._call(target, codec.encode(target, args), codec.output,
                                        idempotency_key=idempotency_key, headers=headers, budget=budget,
                                        timeout=timeout)

    @overload
    async def send(self, handler: Callable[[C], Awaitable[O]], /, *, delay: Seconds | None = None,
                   idempotency_key: str | None = None, headers: Mapping[str, str] | None = None,
                   budget: float | None = None, timeout: Seconds | None = None) -> SendReceipt[O]: ...

    @overload
    async def send(self, handler: Callable[[C, I], Awaitable[O]], arg: I, /, *, delay: Seconds | None = None,
                   idempotency_key: str | None = None, headers: Mapping[str, str] | None = None,
                   budget: float | None = None, timeout: Seconds | None = None) -> SendReceipt[O]: ...

    async def send(self, handler: Callable[..., Awaitable[Any]], /, *args: Any, delay: Seconds | None = None,
                   idempotency_key: str | None = None, headers: Mapping[str, str] | None = None,
                   budget: float | None = None, timeout: Seconds | None = None) -> SendReceipt[Any]:
        """Start ``handler`` without waiting, ``delay`` from now; ``client.attach(receipt)`` then
        returns its output with its declared type."""
        codec, target = self._target(handler)
        return await self._client._send(target, codec.encode(target, args), codec.output, delay=delay,
                                        idempotency_key=idempotency_key, headers=headers, budget=budget,
                                        timeout=timeout)


class _ByIdempotencyKey(_Handle[C]):
    async def attach(self, handler: Callable[..., Awaitable[O]], idempotency_key: str, *,
                     timeout: Seconds | None = None) -> O:
        """Wait for the output of the invocation of ``handler`` that ``idempotency_key`` started."""
        codec, target = self._target(handler)
        parts = by_key(target, idempotency_key, "attach")
        result: O = await self._client._result(parts, codec.output, str(target), timeout=timeout)
        return result

    async def output(self, handler: Callable[..., Awaitable[O]], idempotency_key: str) -> O:
        """Its output if it has finished; ``NotReady`` while it has not."""
        codec, target = self._target(handler)
        result: O = await self._client._result(by_key(target, idempotency_key, "output"), codec.output, str(target))
        return result


class ServiceHandle(_ByIdempotencyKey[Context]):
    """``client.service(definition)``: typed calls to a ``Service``'s handlers."""

    def __init__(self, client: Client, definition: Service) -> None:
        if not isinstance(definition, Service):
            raise TypeError(f"{definition!r} is not a Service: use client.object() or client.workflow() with a key")
        super().__init__(client, definition, None)


class ObjectHandle(_ByIdempotencyKey[ObjectContext]):
    """``client.object(definition, key)``: typed calls to a ``VirtualObject``'s handlers on ``key``."""

    def __init__(self, client: Client, definition: VirtualObject, key: str) -> None:
        if not isinstance(definition, VirtualObject):
            raise TypeError(f"{definition!r} is not a VirtualObject: use client.service() or client.workflow()")
        check_identifier("object key", key)
        super().__init__(client, definition, key)


class WorkflowHandle(_Handle[WorkflowContext]):
    """``client.workflow(definition, key)``: typed calls to a ``Workflow`` on ``key`` (its main
    handler runs once per key: a second ``call`` of it is a ``Conflict``), and that run's result."""

    def __init__(self, client: Client, definition: Workflow, key: str) -> None:
        if not isinstance(definition, Workflow):
            raise TypeError(f"{definition!r} is not a Workflow: use client.service() or client.object()")
        check_identifier("workflow key", key)
        super().__init__(client, definition, key)

    async def attach(self, main: Callable[..., Awaitable[O]], *, timeout: Seconds | None = None) -> O:
        """Wait for the output of the run on this key (``main``: the ``@wf.main()`` handler)."""
        codec, parts = self._run(main, "attach")
        result: O = await self._client._result(parts, codec.output, "/".join(parts[2:4]), timeout=timeout)
        return result

    async def output(self, main: Callable[..., Awaitable[O]]) -> O:
        """The run's output if it has finished; ``NotReady`` while it has not."""
        codec, parts = self._run(main, "output")
        result: O = await self._client._result(parts, codec.output, "/".join(parts[2:4]))
        return result

    def _run(self, main: Callable[..., Any], action: str) -> tuple[HandlerCodec, list[str]]:
        codec, target = self._target(main)
        if codec.handler.kind != "workflow":
            raise ValueError(f"{target} is not {self._definition.name}'s main handler: attach and output "
                             f"by key take the @workflow.main() one")
        assert target.key is not None
        return codec, ["restate", "workflow", target.service, target.key, action]

