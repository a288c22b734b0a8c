"""Identity keys: a handler service given some serves only requests that the sidecar signed.

Anyone who can reach a handler service's port could otherwise run its handlers, with any
journal they like, or read its discovery. With the public key of the sidecar's
``--signing-key`` among its identity keys, each request must carry a fresh
``x-sidecar-signature`` (see ``signature.py``) that one of them verifies; any other answers
``401`` with JSON naming the cause, before a WebSocket is upgraded or a body decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._extras import MissingExtra

if TYPE_CHECKING:  # the signing extra's (cryptography): imported only where there are keys
    from ._identity_keys import Identity

ENV = "HANDLER_IDENTITY_KEYS"


class IdentityKeyError(ValueError):
    """An identity key cannot be read: the message says which and why."""


def middleware(identity: Identity) -> Middleware:
    """Serve only what ``identity`` lets through; the rest gets ``401`` ``{code, message}``."""

    @web.middleware
    async def checked(request: web.Request, handler: Handler) -> web.StreamResponse:
        why = await identity.check(request)
        if why is not None:
            identity.log(request, why)
            return web.json_response({"code": 401, "message": why}, status=401)
        return await handler(request)

    return checked


def from_options(given: Iterable[str] | None) -> Identity | None:
    """The identity check ``app()`` installs, if it has keys; with keys and no ``signing`` extra,
    ``MissingExtra``: a service told to check signatures must not serve unchecked."""
    given = None if given is None else list(given)
    if not (given if given is not None else os.environ.get(ENV, "").strip()):
        return None
    try:
        from ._identity_keys import Identity, identity_keys
    except ImportError as exc:
        raise MissingExtra("signing", f"verifying the sidecar's signatures (identity_keys or {ENV})", exc.name) from None
    return Identity(identity_keys(given, os.environ))
