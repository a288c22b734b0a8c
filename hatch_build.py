"""The sidecar distribution's dependencies, at build time: the SDK pinned to the version being
built, so that durable-sidecar X always runs durable-handler-sdk X (they share the wire
Structs), with that version written once, in handler_sdk/_version.py."""

from __future__ import annotations

from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface


class SidecarDependencies(MetadataHookInterface):
    """``[tool.hatch.metadata.hooks.custom]`` in pyproject.toml: ``sdk`` (the SDK's requirement,
    without a version) and ``dependencies`` (the sidecar's own)."""

    def update(self, metadata: dict[str, Any]) -> None:
        metadata["dependencies"] = [f"{self.config['sdk']}=={metadata['version']}", *self.config["dependencies"]]
