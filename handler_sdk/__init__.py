"""handler_sdk: write durable handlers in Python, served to the sidecar over a WebSocket.

The whole public surface is listed in ``__all__``; everything in a ``_module`` is internal.

Names are imported on first use (PEP 562): the sidecar and its writer process import
``handler_sdk.protocol``, the wire module, and must not pay for (or depend on) the SDK's runtime
and aiohttp just because Python runs this file before any submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names
from ._version import __version__ as __version__

if TYPE_CHECKING:  # "X as X": an explicit re-export, which a strict type checker in users' code requires
    from ._definition import Service as Service, VirtualObject as VirtualObject, Workflow as Workflow
    from ._server import app as app, serve as serve
    from ._status import raise_for_status as raise_for_status
    from .breakers import CircuitBreaker as CircuitBreaker
    from .context import (
        Context as Context,
        DurablePromise as DurablePromise,
        ObjectContext as ObjectContext,
        ObjectSharedContext as ObjectSharedContext,
        WorkflowContext as WorkflowContext,
        WorkflowSharedContext as WorkflowSharedContext,
    )
    from .errors import (
        BudgetExceeded as BudgetExceeded,
        NondeterminismError as NondeterminismError,
        RetryableError as RetryableError,
        TerminalError as TerminalError,
    )
    from .options import RetryPolicy as RetryPolicy

#: Each public name and the module that defines it.
_HOMES = {
    "Service": "._definition",
    "VirtualObject": "._definition",
    "Workflow": "._definition",
    "Context": ".context",
    "ObjectContext": ".context",
    "ObjectSharedContext": ".context",
    "WorkflowContext": ".context",
    "WorkflowSharedContext": ".context",
    "DurablePromise": ".context",
    "TerminalError": ".errors",
    "NondeterminismError": ".errors",
    "RetryableError": ".errors",
    "BudgetExceeded": ".errors",
    "raise_for_status": "._status",
    "RetryPolicy": ".options",
    "CircuitBreaker": ".breakers",
    "serve": "._server",
    "app": "._server",
}

__all__ = list(_HOMES)


__getattr__, __dir__ = lazy_names(__name__, _HOMES, globals())
