"""Liveness: a silent handler is detected by the inactivity timeout; a busy one heartbeats."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Cluster


async def test_a_step_longer_than_the_inactivity_timeout_survives_on_heartbeats(cluster: Cluster) -> None:
    status, body, headers = await cluster.post("/Steps/long_step", 4.5)  # the sidecar's timeout is 3 s
    assert (status, body) == (200, "done")
    _, shown = await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True)
    assert shown["attempts"] == 1


async def test_a_silent_handler_is_aborted_and_retried(cluster: Cluster) -> None:
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    status, body, headers = await cluster.post("/Steps/hang_once", "h")
    assert (status, body) == (200, 2)
    assert loop_time() - started < 15  # detected after ~3 s, not after the hour the handler hangs
    _, shown = await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True)
    assert shown["attempts"] == 2
    assert "inactivity timeout" in shown["last_error"]
