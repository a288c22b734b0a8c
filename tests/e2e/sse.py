"""Reading Server-Sent Events in end-to-end tests, the way a browser's EventSource would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.e2e.conftest import Cluster

#: One SSE message: (id, event type, decoded data). The sidecar names every type it sends:
#: ``milestone`` (journaled), ``token`` (ephemeral) and ``end``; "message" would mean none.
Message = tuple[str | None, str, Any]


async def read_events(response: aiohttp.ClientResponse, until: Callable[[Message], bool] | None = None) -> list[Message]:
    """Messages from an open stream, up to the first one ``until`` accepts, or to its end."""

    async def collect() -> list[Message]:
        messages: list[Message] = []
        fields: dict[str, str] = {}
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                messages.append((fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])))
                if until is not None and until(messages[-1]):
                    return messages
            fields = {}
        return messages

    return await asyncio.wait_for(collect(), 30)


def stage(name: str) -> Callable[[Message], bool]:
    """Accepts the milestone ``{"stage": name, ...}``."""
    return lambda message: (message[1] == "milestone" and isinstance(message[2], dict)
                            and message[2].get("stage") == name)


async def subscribe(cluster: Cluster, invocation_id: str, last: str | None = None) -> aiohttp.ClientResponse:
    """An open event stream of ``invocation_id`` (after event ``last``, if given)."""
    response = await cluster.http.get(f"http://{cluster.ingress}/restate/invocation/{invocation_id}/events",
                                      headers={"Last-Event-ID": last} if last else None)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response
