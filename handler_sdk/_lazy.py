"""Public names imported on first use (PEP 562), for a package's ``__init__``.

A package that lists ``{name: module}`` gets a module ``__getattr__`` that imports the module
defining a name when the name is first looked up (and keeps it, so later lookups skip the call),
and a ``__dir__`` that lists them all. The sidecar imports ``handler_sdk.protocol`` and every pytest
run loads ``handler_sdk.testing``'s plugin: neither may pay for what the rest of the package loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str],
               namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose globals are ``namespace``."""

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return sorted([*namespace, *homes])

    return getattr_, dir_
