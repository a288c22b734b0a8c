"""Every error a client sees is JSON ``{"code": N, "message": "..."}``: never HTML, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import _default_expect_handler as _aiohttp_expect  # sends 100 Continue

from handler_sdk.protocol import identifier_problem

from ..store import StoreError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ErrorBody(msgspec.Struct):
    code: int
    message: str


_encoder = msgspec.json.Encoder()


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode(ErrorBody(status, message)), content_type="application/json",
        headers=headers,
    )


def json_response(value: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(value), content_type="application/json", headers=headers)


class HTTPProblem(Exception):
    """Raised by route code to answer with an error: ``raise HTTPProblem(404, "no such service")``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def refuse_long_identifiers(*named: tuple[str, str | None]) -> None:
    """Answer 400 for the first ``(what, value)`` over the identifier limit, before anything is
    looked up or written (``None``: absent)."""
    for what, value in named:
        if value is not None and (problem := identifier_problem(what, value)) is not None:
            raise HTTPProblem(400, problem)


def _framework_message(exc: web.HTTPException, max_body: int) -> str:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"request body is larger than the limit of {max_body} bytes"
    if isinstance(exc, web.HTTPNotFound):
        return "no such route"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"method {exc.method} not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}"
    return exc.reason


def exception_response(exc: Exception, what: str, max_body: int = 0) -> web.Response:
    """The JSON error a client gets for ``exc``, raised while serving ``what``."""
    if isinstance(exc, HTTPProblem):
        return error_response(exc.status, exc.message, headers=exc.headers)
    if isinstance(exc, StoreError) and exc.refused:
        return error_response(400, str(exc))
    if isinstance(exc, StoreError):
        return error_response(503, f"the store cannot take writes now: {exc}", headers={"Retry-After": "1"})
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return error_response(exc.status, _framework_message(exc, max_body))
    if isinstance(exc, ConnectionError):  # e.g. the worker owning the key is restarting
        return error_response(503, f"temporarily unavailable: {exc}", headers={"Retry-After": "1"})
    log.error("unhandled error serving %s", what, exc_info=exc)
    return error_response(500, "internal error; the sidecar log has the details")


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Every route's ``expect_handler``: ``Expect: 100-continue`` is taken as aiohttp takes it; any
    other expectation is a JSON 417 (aiohttp's own is text, and a 500 for a value not UTF-8)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11 or expect.lower() == "100-continue":
        await _aiohttp_expect(request)
        return None
    return error_response(417, f"unsupported Expect: {expect[:100]!r}; only Expect: 100-continue is supported")


class JsonRoutes:
    """``app.router``'s ``add_*`` methods, each route with :func:`expect_continue` (aiohttp runs
    the expect handler before any middleware, so the JSON middleware cannot answer for it)."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        self._router = router

    def add_get(self, path: str, handler: Handler) -> None:
        self._router.add_get(path, handler, expect_handler=expect_continue)

    def add_post(self, path: str, handler: Handler) -> None:
        self._router.add_post(path, handler, expect_handler=expect_continue)

    def add_put(self, path: str, handler: Handler) -> None:
        self._router.add_put(path, handler, expect_handler=expect_continue)

    def add_delete(self, path: str, handler: Handler) -> None:
        self._router.add_delete(path, handler, expect_handler=expect_continue)

    def add_fallback(self) -> None:
        """The last route: what no other route takes is a 404 or a 405 as aiohttp would answer,
        but with :func:`expect_continue` too (aiohttp's own no-route answer has its expect handler)."""
        fallback = self._router.add_resource(r"/{tail:[\s\S]*}")

        async def unrouted(request: web.Request) -> web.StreamResponse:
            allowed: set[str] = set()
            for resource in self._router.resources():
                if resource is not fallback:
                    allowed |= (await resource.resolve(request))[1]
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
            raise web.HTTPNotFound()

        fallback.add_route(hdrs.METH_ANY, unrouted, expect_handler=expect_continue)


async def json_only(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: an error aiohttp answers by itself, past the middleware, is text;
    make it JSON too."""
    if response.status < 400 or not isinstance(response, web.Response) or response.content_type == "application/json":
        return
    text = (response.text or "").strip() if response.charset else ""
    body = _encoder.encode(ErrorBody(response.status, text[:500] or response.reason))
    response.body = body
    response.content_type = "application/json"
    response.charset = None
    if "Content-Length" in response.headers:  # counted already: this hook runs as headers are written
        response.headers["Content-Length"] = str(len(body))


def json_errors(max_body: int) -> Middleware:
    """Middleware turning every failure into a JSON error response."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return exception_response(exc, f"{request.method} {request.path}", max_body)
        except Exception as exc:
            return exception_response(exc, f"{request.method} {request.path}", max_body)

    return middleware
