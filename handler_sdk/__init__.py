"""handler_sdk: write durable handlers in Python, served to the sidecar over a WebSocket.

The whole public surface is listed in ``__all__``; everything in a ``_module`` is internal.
"""

from ._definition import Service, VirtualObject, Workflow
from ._server import app, serve
from .context import (
    Context,
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    WorkflowContext,
    WorkflowSharedContext,
)
from .errors import NondeterminismError, TerminalError
from .options import RetryPolicy

__all__ = [
    "Service",
    "VirtualObject",
    "Workflow",
    "Context",
    "ObjectContext",
    "ObjectSharedContext",
    "WorkflowContext",
    "WorkflowSharedContext",
    "DurablePromise",
    "TerminalError",
    "NondeterminismError",
    "RetryPolicy",
    "serve",
    "app",
]
