"""What a request addresses and carries, checked before it is sent: the target's path parts,
the argument encoded (and, for a handler function, decoded back as its parameter type, as the
handler service will), and a decoder for the output from the handler's return annotation."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote

import msgspec

from .._arguments import encode_arg
from .._definition import BadInput, HandlerDef, _Definition, call_target
from .._steps import decoder_for
from ..protocol import identifier_problem
from ._errors import ClientError


class Target(NamedTuple):
    """A handler to call: ``service`` (or object, or workflow) name, ``key`` (``None`` for a
    service), ``handler`` name."""

    service: str
    key: str | None
    handler: str

    @classmethod
    def parse(cls, text: str) -> Target:
        """``Service/handler`` or ``Object/key/handler``, as the URL path writes it (each part
        percent-decoded once, so ``a%2Fb`` is the key ``a/b``); ``ValueError`` otherwise."""
        if not isinstance(text, str):
            raise TypeError(f"a target is a string like 'Counter/alice/add', got {text!r}")
        parts = [unquote(part) for part in text.strip("/").split("/")]
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text[:200]!r} is not a target: write Service/handler or Object/key/handler")
        return cls(parts[0], parts[1] if len(parts) == 3 else None, parts[-1]).checked()

    def checked(self) -> Target:
        if self.key is not None:
            check_identifier("object key", self.key)
        return self

    def parts(self) -> list[str]:
        return [self.service, self.handler] if self.key is None else [self.service, self.key, self.handler]

    def __str__(self) -> str:
        return "/".join(self.parts())


def check_identifier(what: str, value: str) -> None:
    """``ValueError`` for an identifier the sidecar would refuse (over 1,024 bytes), before sending."""
    if not isinstance(value, str):
        raise TypeError(f"the {what} must be a string, got {value!r}")
    problem = identifier_problem(what, value)
    if problem is not None:
        raise ValueError(problem)


def by_key(target: Target, idempotency_key: str, action: str) -> list[str]:
    """The path of ``attach`` or ``output`` of the invocation ``target`` got with ``idempotency_key``."""
    check_identifier("idempotency key", idempotency_key)
    if not idempotency_key:
        raise ValueError("the idempotency key is empty")
    return ["restate", "invocation", *target.parts(), idempotency_key, action]


def encode_input(target: Target, arg: Any) -> bytes:
    """The argument as JSON (``None``: no input); ``TypeError`` naming the target if msgspec
    cannot encode it."""
    try:
        return encode_arg(arg)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"{target}: the argument cannot be encoded as JSON: {exc}") from None


class HandlerCodec(NamedTuple):
    """A handler function as the client calls it: its names, definition and output decoder."""

    service: str
    handler: HandlerDef
    output: msgspec.json.Decoder[Any]

    def target(self, key: str | None) -> Target:
        return Target(self.service, key, self.handler.name).checked()

    def encode(self, target: Target, args: tuple[Any, ...]) -> bytes:
        """The input for ``args`` (none, or the one argument), checked as the handler will decode
        it: a wrong type is a ``TypeError`` here rather than a 400 from the sidecar."""
        if not self.handler.takes_input:
            if args:
                raise TypeError(f"{target} takes no argument")
            return b""
        if len(args) != 1:
            raise TypeError(f"{target} takes one argument, got {len(args)}")
        raw = encode_input(target, args[0])
        try:
            self.handler.decode_input(raw)
        except BadInput as exc:
            raise TypeError(str(exc)) from None
        return raw


@functools.lru_cache(maxsize=1024)
def handler_codec(definition: _Definition, fn: Callable[..., Any], *, keyed: bool) -> HandlerCodec:
    """``fn`` as a handler of ``definition``: ``TypeError`` or ``ValueError`` if it is not one."""
    service, name = call_target(definition, fn, keyed=keyed)
    handler = definition.handlers[name]
    handler.resolve()
    try:
        returns = typing.get_type_hints(fn).get("return", Any)
    except Exception as exc:
        raise TypeError(f"handler {service}/{name}: cannot resolve its annotations: {exc}") from exc
    return HandlerCodec(service, handler, decoder_for(returns))


def decode_output(decoder: msgspec.json.Decoder[Any], body: bytes, what: str, invocation_id: str | None) -> Any:
    """The handler's output decoded as its declared type; a ``ClientError`` if it does not fit
    (the handler service runs other code than the caller imported)."""
    try:
        return decoder.decode(body or b"null")
    except msgspec.DecodeError as exc:
        raise ClientError(None, f"{what}: the output does not decode as declared: {exc}",
                          invocation_id=invocation_id) from None
