"""The fixture without any asyncio plugin: a plain test that runs its own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from handler_sdk.testing import TestSidecar

import shop


def test_the_fixture_needs_no_asyncio_plugin(sidecar_harness: Callable[..., TestSidecar]) -> None:
    async def scenario() -> int:
        async with sidecar_harness([shop.counter]) as sc:
            result: int = await sc.call("Counter/dave/add", 3)
            return result

    assert asyncio.run(scenario()) == 3
