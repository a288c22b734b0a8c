"""Where a service object lives, as ``MODULE:NAME``: the handler service runs in a child process
(so that killing it is a real SIGKILL), which can only import what the test defined by name."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import ModuleType

from .._definition import Definition, _Definition
from ._errors import HarnessError


class NotImportable(HarnessError):
    """A service cannot be found by module and name: the message says why and what to do."""


def _found_in(module: ModuleType | None, service: Definition) -> str | None:
    if module is None:
        return None
    for name, value in list(vars(module).items()):
        if value is service:
            return name
    return None


def import_path(service: Definition) -> str:
    """``MODULE:NAME`` under which a child process imports ``service``.

    Looked for first in the modules that define its handlers (where it almost always is), then in
    every module imported so far."""
    if not isinstance(service, _Definition):
        raise TypeError(f"expected a Service, VirtualObject or Workflow, got {service!r}")
    homes = [h.fn.__module__ for h in service.handlers.values()]
    for module_name in [*dict.fromkeys(homes), *list(sys.modules)]:
        name = _found_in(sys.modules.get(module_name), service)
        if name is None:
            continue
        if module_name == "__main__":
            raise NotImportable(
                f"service {service.name!r} is defined in the script being run (__main__), which a child "
                "process cannot import by name: define it in a module of its own and import it from there")
        return f"{module_name}:{name}"
    where = f" (its handlers are in {homes[0]})" if homes else ""
    raise NotImportable(
        f"service {service.name!r} is not a global of any imported module{where}: the handler service runs "
        "in a child process, which imports each service by module and name, so define it at module level "
        "(not inside a function or a fixture) in a module the test imports")


def import_paths(services: Iterable[Definition]) -> list[str]:
    """Each distinct service's ``MODULE:NAME``, in order (a service given twice is served once)."""
    unique = list({id(service): service for service in services}.values())
    if not unique:
        raise ValueError("TestSidecar needs at least one service")
    return [import_path(service) for service in unique]
