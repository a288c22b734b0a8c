"""The pytest plugin (entry point ``pytest11``): the ``sidecar_harness`` fixture.

``sidecar_harness([services], **options)`` makes a :class:`~handler_sdk.testing.TestSidecar` whose
data directory and logs are under the test's ``tmp_path`` (kept by pytest for a look after a
failure); the test runs it with ``async with``. A plain fixture, not an async one: it works under
pytest-asyncio or pytest-aiohttp in any mode, anyio, or a test that runs its own loop. Whatever a
test leaves running is SIGKILLed at teardown.

The harness itself is imported on first use: every pytest run of an environment with the SDK
loads this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .._definition import Definition
    from ._sidecar import TestSidecar

SidecarHarness = Callable[..., "TestSidecar"]


@pytest.fixture
def sidecar_harness(tmp_path: Path) -> Iterator[SidecarHarness]:
    """A factory: ``async with sidecar_harness([counter]) as sc: ...`` (options as TestSidecar's)."""
    from ._sidecar import TestSidecar

    made: list[TestSidecar] = []

    def make(services: Iterable[Definition] | Definition, **options: Any) -> TestSidecar:
        options.setdefault("directory", tmp_path / f"sidecar-{len(made)}")
        made.append(TestSidecar(services, **options))
        return made[-1]

    yield make
    for harness in made:
        harness.kill_processes()
