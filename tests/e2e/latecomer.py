"""A handler service registered while the sidecar runs: the target of a send made before it existed."""

from __future__ import annotations

from handler_sdk import Context, Service

latecomer = Service("Latecomer")


@latecomer.handler()
async def ping(ctx: Context, who: str) -> str:
    return f"pinged by {who}"
