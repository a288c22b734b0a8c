"""A handler that breaks the protocol fails only the attempt concerned: the sidecar goes on, the
link goes on serving its other invocations, and the inactivity timeout still works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import eventually

#: Scenario -> (target, what last_error must say). Each fails only its own attempt.
ATTEMPT_FAILS: dict[str, tuple[str, str]] = {
    "wrong-index": ("/Rogue/act", "entry index 7 sent, 1 expected"),
    "state-from-shared": ("/RogueObject/k/peek", "may not write state"),
    "sleep-2**70": ("/Rogue/act", "undecodable frame"),
    "sleep-max": ("/Rogue/act", "wake_at_ms"),
    "sleep-negative": ("/Rogue/act", "wake_at_ms"),
    "send-far": ("/Rogue/act", "delay_ms"),
    "forged-awakeable": ("/Rogue/act", "done already"),
    "suspend-negative": ("/Rogue/act", "suspended waiting on [-1]"),
}

#: Frames that name no invocation: nobody can tell whose message was lost, so the link closes
#: and every attempt on it fails (and would be retried); later invocations get a new link.
LINK_CLOSES: dict[str, str] = {
    "garbage": "corrupt frame",
    "text": "TEXT frame",
    "oversized": "exceeds limit",
}


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
async def rogue(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """The sidecar in front of the rogue handler alone, over one link per deployment per worker."""
    config = tmp_path / "sidecar.toml"
    config.write_text("connections_per_deployment = 1\n")
    flags = ["--config", str(config), "--durability", "none", "--inactivity-timeout", "2",
             "--workers", str(request.param)]
    async with running_cluster(tmp_path, http, request, flags, handlers="rogue",
                               handler_module="tests.e2e.rogue") as cluster:
        yield cluster


async def _send(cluster: Cluster, scenario: str, target: str = "/Rogue/act", **args: Any) -> str:
    status, body, _ = await cluster.post(f"{target}/send", {"scenario": scenario, **args})
    assert status == 202, body
    return body["invocationId"]


async def _settled(cluster: Cluster, invocation_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, view = await cluster.get(f"/invocations/{invocation_id}", admin=True)
        assert status == 200, view
        return view if view["status"] in statuses else None
    return await eventually(check, what=f"{invocation_id} to be {' or '.join(statuses)}")


async def _completes(cluster: Cluster, scenario: str, **args: Any) -> str:
    status, body, _ = await cluster.post("/Rogue/act", {"scenario": scenario, **args})
    assert (status, body) == (200, "ok"), body
    return scenario


async def test_a_bad_frame_fails_only_its_attempt(rogue: Cluster) -> None:
    for scenario, (target, error) in ATTEMPT_FAILS.items():
        holder = await _send(rogue, "hold")
        await _settled(rogue, holder, ("running",))
        failed = await _settled(rogue, await _send(rogue, scenario, target), ("paused", "backing-off"))
        assert error in (failed["last_error"] or ""), (scenario, failed)
        await _completes(rogue, "release")
        released = await _settled(rogue, holder, ("completed", "paused"))
        assert (released["status"], released["output"]) == ("completed", "released"), (scenario, released)
        assert rogue.sidecar.running, scenario


async def test_frames_for_other_invocations_are_dropped(rogue: Cluster) -> None:
    finished = await _send(rogue, "ok")
    assert (await _settled(rogue, finished, ("completed",)))["output"] == "ok"
    await _completes(rogue, "stranger", other=finished)
    assert (await _settled(rogue, finished, ("completed",)))["output"] == "ok"


async def test_a_frame_that_names_no_invocation_closes_only_its_link(rogue: Cluster) -> None:
    for scenario, error in LINK_CLOSES.items():
        failed = await _settled(rogue, await _send(rogue, scenario), ("paused", "backing-off"))
        assert error in (failed["last_error"] or ""), (scenario, failed)
        await _completes(rogue, "ok")  # over a new link
        assert rogue.sidecar.running, scenario


async def test_the_inactivity_timeout_still_works_after_bad_frames(rogue: Cluster) -> None:
    for scenario, (target, _) in ATTEMPT_FAILS.items():
        await _settled(rogue, await _send(rogue, scenario, target), ("paused", "backing-off"))
    silent = await _settled(rogue, await _send(rogue, "silent"), ("paused", "backing-off"))
    assert "inactivity timeout" in silent["last_error"]
