"""A node connects to the NATS cluster while one server of its list is down (a node restarted
during a NATS server's outage): the refusal is logged and another server taken."""

from __future__ import annotations

from sidecar.cluster.nats_log import close, connect
from sidecar.cluster.nats_servers import NatsServers
from tests.procs import free_port


async def test_a_client_connects_past_a_server_that_refuses(nats_servers: NatsServers) -> None:
    refused = f"nats://127.0.0.1:{free_port()}"
    # nats-py tries the servers in a random order: 20 tries meet the refusing one first almost surely.
    for _ in range(20):
        client = await connect([refused, *nats_servers.urls], "restarted-node")
        try:
            assert client.is_connected
        finally:
            await close(client)
