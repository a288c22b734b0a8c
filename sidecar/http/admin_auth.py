"""Who may use the admin API: the holder of its bearer token (``--admin-token``).

The admin API cancels, kills, purges and edits state; anyone who reaches the port could do all of
it. With a token, every request but ``GET /health`` (a load balancer's probe carries no secret)
and the web UI's static files must send ``authorization: Bearer TOKEN``, or is answered ``401`` with a JSON message saying what
was wrong with what it sent. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .errors import HTTPProblem
from .ui import is_ui_path

#: Paths anyone may read: liveness, and the web UI's static files (they hold no data: the page
#: asks for the token and sends it with each of its API calls).
OPEN_PATHS = frozenset({"/health"})

_CHALLENGE = {"www-authenticate": 'Bearer realm="sidecar admin"'}


def credentials_problem(header: str | None, expected: bytes) -> str | None:
    """Why a request with this ``authorization`` header may not use the admin API (``None``: it may)."""
    if header is None:
        return "the admin API needs a token: send `authorization: Bearer TOKEN` (the CLI reads SIDECAR_ADMIN_TOKEN)"
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "the authorization header must be `Bearer TOKEN`"
    if not hmac.compare_digest(given.strip().encode(errors="surrogateescape"), expected):
        return "the admin token is wrong"
    return None


def bearer_auth(token: str) -> Middleware:
    """Middleware refusing admin requests that do not carry ``token``."""
    expected = token.encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        open_path = request.path in OPEN_PATHS or is_ui_path(request.path)
        if not open_path or request.method not in ("GET", "HEAD"):
            problem = credentials_problem(request.headers.get("authorization"), expected)
            if problem is not None:
                raise HTTPProblem(401, problem, headers=_CHALLENGE)
        return await handler(request)

    return middleware
