"""Real nats-servers on loopback for the cluster tests (``sidecar.cluster.nats_servers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.cluster.nats_servers import NatsServers


@pytest.fixture
async def nats_servers(tmp_path: Path) -> AsyncIterator[NatsServers]:
    """Three clustered nats-servers, healthy and with a JetStream meta leader; stopped after the test."""
    async with NatsServers(tmp_path / "nats", 3) as servers:
        yield servers
