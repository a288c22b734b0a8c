"""A typed Python client for the sidecar's ingress: calls, sends, results, awakeables and event
streams (docs/client.md).

    from handler_sdk.client import Client

    async with Client("http://127.0.0.1:8080") as client:
        total = await client.call("Counter/alice/add", 5)             # by target string
        total = await client.object(counter, "alice").call(add, 5)    # typed from the handler

Its public names are the ones below; the ``_modules`` are internal. It needs only aiohttp and
msgspec, as the rest of ``handler_sdk`` does.
"""

from __future__ import annotations

from ._client import Client, Seconds, SendReceipt
from ._errors import (
    BadRequest, ClientError, Conflict, ConnectionFailed, InvocationFailed, NotFound, NotReady, Overloaded,
    PayloadTooLarge, TimedOut,
)
from ._events import End, Event, EventStream, GrowthWarning, Milestone, Token
from ._handles import ObjectHandle, ServiceHandle, WorkflowHandle

__all__ = [
    "Client", "SendReceipt", "Seconds",
    "ServiceHandle", "ObjectHandle", "WorkflowHandle",
    "EventStream", "Event", "Milestone", "Token", "GrowthWarning", "End",
    "ClientError", "BadRequest", "NotFound", "Conflict", "PayloadTooLarge", "NotReady", "Overloaded",
    "InvocationFailed", "ConnectionFailed", "TimedOut",
]
