"""The web UI's files as shipped: every module an import names is there and preloaded, nothing
builds HTML from text, and the routes serve them (with no data) under /ui only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sidecar.http.errors import JsonRoutes, json_errors
from sidecar.http.ui import UiRoutes, is_ui_path

STATIC = Path(__file__).resolve().parents[2] / "sidecar" / "http" / "ui_static"
_IMPORT = re.compile(r'^import .* from "\./([\w-]+\.js)";$', re.M)


def _modules() -> dict[str, str]:
    return {path.name: path.read_text() for path in STATIC.glob("*.js")}


def test_every_import_is_shipped_and_preloaded() -> None:
    modules = _modules()
    index = (STATIC / "index.html").read_text()
    imported = {name for text in modules.values() for name in _IMPORT.findall(text)}
    assert imported <= modules.keys(), imported - modules.keys()
    assert 'src="/ui/app.js"' in index
    preloaded = set(re.findall(r'<link rel="modulepreload" href="/ui/([\w-]+\.js)">', index))
    assert preloaded == modules.keys() - {"app.js"}  # each module fetched at once, not in a waterfall
    for text in [index, *modules.values()]:
        for src in re.findall(r'(?:src|href)="/ui/([^"]+)"', text):
            assert (STATIC / src).is_file(), src


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_turns_text_into_markup(name: str) -> None:
    """Payloads, keys and messages are hostile input: only text nodes and attributes, never HTML."""
    text = (STATIC / name).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "createContextualFragment", "srcdoc"):
        assert sink not in text, f"{name} uses {sink}"


def test_the_ui_paths_are_under_ui_only() -> None:
    assert is_ui_path("/ui") and is_ui_path("/ui/") and is_ui_path("/ui/app.js")
    for path in ("/uix", "/invocations", "/health", "/", "/state/ui/k"):
        assert not is_ui_path(path)


async def test_the_routes_serve_the_files_and_nothing_else() -> None:
    app = web.Application(middlewares=[json_errors(1 << 20)])
    routes = JsonRoutes(app.router)
    UiRoutes().add_to(routes)
    routes.add_fallback()
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/ui")
        assert page.status == 200 and page.content_type == "text/html"
        assert (await page.text()) == (STATIC / "index.html").read_text()
        script = await client.get("/ui/app.js")
        assert script.content_type == "text/javascript" and script.headers["X-Content-Type-Options"] == "nosniff"
        policy = script.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
        again = await client.get("/ui/app.js", headers={"If-None-Match": script.headers["ETag"]})
        assert again.status == 304
        for missing in ("/ui/nothing.js", "/ui/%2E%2E%2Fui.py", "/ui/.hidden"):
            answer = await client.get(missing)
            assert answer.status == 404 and (await answer.json())["code"] == 404, missing
