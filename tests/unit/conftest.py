"""Fixtures for the SDK unit tests."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from handler_sdk import app
from tests.unit.fake_sidecar import Connect, FakeSidecar, barrier_service


@pytest.fixture
async def connect(aiohttp_client: Any) -> AsyncIterator[Connect]:
    sidecars: list[FakeSidecar] = []

    async def _connect(*services: Any, **options: Any) -> FakeSidecar:
        """Serve ``services`` (and the barrier); ``options`` go to ``app()``."""
        application = app([barrier_service, *services], **options)
        client = await aiohttp_client(application)
        sidecars.append(FakeSidecar(await client.ws_connect("/connect")))
        return sidecars[-1]

    yield _connect
    for sidecar in sidecars:
        await sidecar.aclose()


