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


def test_the_test_harness_names_are_pinned() -> None:
    import handler_sdk.testing

    assert handler_sdk.testing.__all__ == [
        "TestSidecar", "Invocation", "JournalEntry", "Status", "SidecarError", "HarnessError", "NotImportable",
    ]


def test_the_test_harness_runs_the_sidecar_and_never_imports_it() -> None:
    """The SDK installs without the sidecar: its harness starts ``python -m sidecar`` as a process.
    Its pytest plugin, loaded by every pytest run where the SDK is installed, loads nothing heavy."""
    loaded = _modules_loaded_by("from handler_sdk.testing import TestSidecar, Invocation, SidecarError")
    assert not {name for name in loaded if name == "sidecar" or name.startswith("sidecar.")}
    plugin = _modules_loaded_by("import handler_sdk.testing.pytest_plugin")
    assert "sidecar" not in plugin and "handler_sdk.testing._sidecar" not in plugin
