"""handler_sdk.testing: run handlers against a real sidecar in tests, with time skipping.

``async with TestSidecar([counter]) as sc:`` starts a sidecar (from the ``durable-sidecar``
distribution, which a test environment installs) and the services under test as child processes;
``sc.call``, ``sc.send``, ``sc.invocation``, ``sc.wait_for``, ``sc.kill_handler``, ``sc.restart``
and ``sc.advance`` drive them. The pytest plugin (``sidecar_harness`` fixture) comes with the SDK.
docs/testing.md has a complete example.

Names are imported on first use (PEP 562), as in ``handler_sdk``: the pytest plugin, which every
pytest run of an environment with the SDK loads, lives in this package and must stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # "X as X": an explicit re-export, which a strict type checker in users' code requires
    from ._errors import HarnessError as HarnessError, SidecarError as SidecarError
    from ._services import NotImportable as NotImportable
    from ._sidecar import TestSidecar as TestSidecar
    from ._views import Invocation as Invocation, JournalEntry as JournalEntry, Status as Status

#: Each public name and the module that defines it.
_HOMES = {
    "TestSidecar": "._sidecar",
    "Invocation": "._views",
    "JournalEntry": "._views",
    "Status": "._views",
    "SidecarError": "._errors",
    "HarnessError": "._errors",
    "NotImportable": "._services",
}

__all__ = list(_HOMES)


__getattr__, __dir__ = lazy_names(__name__, _HOMES, globals())
