"""A deployment whose discovery asks for absurd intervals or timeouts is refused at registration
with a 400 that names the field, before any deadline or retry could be computed from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from sidecar.ids import IdGenerator
from sidecar.transport.registry import RegistrationError, Registry
from sidecar.store import Store


def _discovery(handler: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"protocol": 1, "services": [
        {"name": "S", "kind": "service", "handlers": [{"name": "h", "kind": "shared", **handler}]}]})


@pytest.mark.parametrize(("handler", "named"), [
    ({"timeouts": {"total_ms": 10**22}}, "timeouts.total_ms"),
    ({"timeouts": {"inactivity_ms": -5}}, "timeouts.inactivity_ms"),
    ({"retry": {"max_interval_ms": 10**20}}, "retry.max_interval_ms"),
    ({"retry": {"initial_interval_ms": -1}}, "retry.initial_interval_ms"),
    ({"retry": {"multiplier": 0.5}}, "retry.multiplier"),
])
async def test_absurd_handler_options_are_refused(
        aiohttp_server: Any, tmp_path: Path, handler: dict[str, Any], named: str) -> None:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=_discovery(handler), content_type="application/json")
    application = web.Application()
    application.router.add_get("/discover", serve)
    server = await aiohttp_server(application)
    store = Store(tmp_path / "data", durability="none", map_size=64 * 1024**2)
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(RegistrationError) as refused:
                await Registry(store, IdGenerator()).register(str(server.make_url("")), force=False, http=http)
    finally:
        store.close_environment()
    assert refused.value.status == 400 and f"S/h {named}" in refused.value.message
