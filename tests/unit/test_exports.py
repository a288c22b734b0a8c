"""The public surface of handler_sdk is pinned: adding or removing a name is a deliberate act."""

import subprocess
import sys
from pathlib import Path

import handler_sdk


def test_exported_names_are_pinned() -> None:
    assert handler_sdk.__all__ == [
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
        "RetryableError",
        "BudgetExceeded",
        "raise_for_status",
        "RetryPolicy",
        "CircuitBreaker",
        "serve",
        "app",
    ]
    for name in handler_sdk.__all__:
        assert getattr(handler_sdk, name) is not None


def _modules_loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_wire_module_imports_no_runtime() -> None:
    """The sidecar's store and writer process import the protocol module; they must not pull in
    aiohttp or the SDK's runtime with it."""
    for statement in ("import handler_sdk.protocol", "import sidecar.store.writer"):
        loaded = _modules_loaded_by(statement)
        assert not {"aiohttp", "handler_sdk._server", "handler_sdk.context"} & loaded, statement


def test_the_sdk_ships_its_type_information() -> None:
    assert (Path(handler_sdk.__file__).parent / "py.typed").is_file()
