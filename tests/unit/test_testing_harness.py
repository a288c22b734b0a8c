"""handler_sdk.testing before any process starts: what it refuses, and why, in words a user acts on."""

from __future__ import annotations

import sys
import types

import pytest

from handler_sdk import ObjectContext, VirtualObject
from handler_sdk.testing import HarnessError, NotImportable, TestSidecar
from handler_sdk.testing._services import import_path, import_paths
from handler_sdk.testing._sidecar import _segments, sidecar_command
from tests.e2e.handlers import SERVICES, counter


def test_a_service_is_found_where_its_module_holds_it() -> None:
    assert import_path(counter) == "tests.e2e.handlers:counter"
    assert import_paths([counter, SERVICES[1], counter]) == ["tests.e2e.handlers:counter", "tests.e2e.handlers:steps"]


def test_a_service_defined_inside_a_function_is_refused_before_anything_starts() -> None:
    local = VirtualObject("Local")

    @local.handler()
    async def get(ctx: ObjectContext) -> int:
        return 1

    with pytest.raises(NotImportable, match="'Local' is not a global of any imported module .*define it at module level"):
        TestSidecar([local])


def test_a_service_of_the_script_being_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    script = types.ModuleType("__main__")
    scripted = VirtualObject("Scripted")

    @scripted.handler()
    async def get(ctx: ObjectContext) -> int:
        return 1

    script.scripted = scripted  # type: ignore[attr-defined]
    get.__module__ = "__main__"
    monkeypatch.setitem(sys.modules, "__main__", script)
    with pytest.raises(NotImportable, match=r"defined in the script being run \(__main__\)"):
        import_path(scripted)


def test_no_services_and_not_services_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one service"):
        TestSidecar([])
    with pytest.raises(TypeError, match="expected a Service, VirtualObject or Workflow"):
        TestSidecar(["Counter"])  # type: ignore[list-item]


def test_without_the_sidecar_installed_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sidecar", None)  # as if the distribution were not there
    with pytest.raises(HarnessError, match="pip install durable-sidecar"):
        sidecar_command()


def test_targets_are_paths_with_each_part_escaped_once() -> None:
    assert _segments("Counter/al ice/add") == "Counter/al%20ice/add"
    assert _segments("/Greeter/greet/") == "Greeter/greet"
    assert _segments("Counter/a%2Fb/add") == "Counter/a%2Fb/add"
    for bad in ("Counter", "a/b/c/d", "Counter//add"):
        with pytest.raises(ValueError, match="expected Service/handler or Object/key/handler"):
            _segments(bad)


async def test_waiting_for_an_unknown_status_is_refused() -> None:
    sc = TestSidecar([counter])
    with pytest.raises(ValueError, match="unknown status 'done'"):
        await sc.wait_for("inv_x", "done")  # type: ignore[arg-type]


async def test_a_harness_not_started_says_so() -> None:
    with pytest.raises(RuntimeError, match="use it inside `async with`"):
        await TestSidecar([counter]).call("Counter/a/add", 1)
