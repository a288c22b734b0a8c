"""``GET /ui`` (admin): the web UI, static files shipped in the package (``ui_static/``).

The files hold no data: the page reads everything from the admin JSON API with ``fetch``, so the
server serves only what is in ``ui_static/`` and the browser's hash routes (``#/invocations``,
``#/invocations/ID``, ``#/state/OBJECT/KEY``, ...) never reach it. Being data-free, these routes
are the ones an admin token does not guard (see :func:`is_ui_path`); the page asks for the token
when the API answers ``401`` and sends it on every API request.

Every answer carries a Content-Security-Policy that allows the page's own scripts and styles and
nothing else (no inline script, no other origin): the page never builds HTML from what it shows,
and this makes sure a payload that got through anyway could run nothing.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from .errors import HTTPProblem, JsonRoutes

#: Everything the UI serves is under this path (the admin API has nothing else there).
UI_PREFIX = "/ui"

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag) each load: an upgraded sidecar's files are seen at once
}


def is_ui_path(path: str) -> bool:
    """Whether ``path`` is one of the UI's static files (served without an admin token)."""
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


class _File:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, name: str, body: bytes) -> None:
        self.body = body
        suffix = name[name.rfind("."):]
        self.content_type = _TYPES.get(suffix, "application/octet-stream")
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class UiRoutes:
    """Serves ``ui_static/``, read once when the admin app is built (a few tens of KiB)."""

    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("ui_static")
        self._files = {entry.name: _File(entry.name, entry.read_bytes())
                       for entry in folder.iterdir() if entry.is_file() and not entry.name.startswith(".")}
        assert "index.html" in self._files, "the package lacks sidecar/http/ui_static/index.html"

    def add_to(self, routes: JsonRoutes) -> None:
        routes.add_get(UI_PREFIX, self.index)
        routes.add_get(UI_PREFIX + "/", self.index)
        routes.add_get(UI_PREFIX + "/{name}", self.file)

    async def index(self, request: web.Request) -> web.StreamResponse:
        return self._answer(request, self._files["index.html"])

    async def file(self, request: web.Request) -> web.StreamResponse:
        found = self._files.get(request.match_info["name"])
        if found is None:
            raise HTTPProblem(404, "no such file in the web UI")
        return self._answer(request, found)

    @staticmethod
    def _answer(request: web.Request, found: _File) -> web.StreamResponse:
        headers = {**_SECURITY_HEADERS, "ETag": found.etag}
        if found.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, content_type=found.content_type,
                            charset="utf-8" if found.content_type.startswith("text/") else None, headers=headers)
