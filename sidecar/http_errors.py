"""Every error a client sees is JSON ``{"code": N, "message": "..."}``: never HTML, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from .store import StoreError

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


def _framework_message(exc: web.HTTPException, max_body: int) -> str:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"request body is larger than the limit of {max_body} bytes"
    if isinstance(exc, web.HTTPNotFound):
        return "no such route"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"method {exc.method} not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}"
    return exc.reason


def json_errors(max_body: int) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware turning every failure into a JSON error response."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HTTPProblem as problem:
            return error_response(problem.status, problem.message, headers=problem.headers)
        except StoreError as exc:
            return error_response(503, f"the store cannot take writes now: {exc}", headers={"Retry-After": "1"})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, _framework_message(exc, max_body))
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return error_response(500, "internal error; the sidecar log has the details")

    return middleware
