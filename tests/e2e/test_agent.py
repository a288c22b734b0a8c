"""The 40-step agent example (examples/agent/): its chaos demo's short form, and its deadline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster

TASK = {"customer": "zoe", "email": "zoe@example.com", "goal": "a team plan", "amount_cents": 4900}


def test_the_chaos_demo_does_every_side_effect_once_under_sigkills_and_an_outage() -> None:
    done = subprocess.run([sys.executable, "-m", "examples.agent.demo", "--short"], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for key in ("order-1", "order-2"):
        [line] = [line for line in lines if line.startswith(f"  {key}: ")]
        assert "approved; emails ['confirmed', 'received']; invoices 1; CRM record whole" in line, line
    assert lines[-1] == "OK: every side effect happened exactly once"


@pytest.fixture
async def agents(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, http, request, ["--durability", "none"],
                               handlers="examples.agent.workflow:agent", sink="examples.agent.vendors",
                               sink_env="VENDORS_URL", sink_ready="/stats") as cluster:
        yield cluster


async def test_an_agent_nobody_approves_confirms_once_its_deadline_passes(agents: Cluster) -> None:
    status, output, _ = await agents.post("/Agent/order-z/run", {**TASK, "approval_deadline_s": 0.5})
    assert status == 200, output
    assert output["decision"] == "not approved in time" and output["invoice"] == "in_1"
    async with agents.http.get(f"{agents.sink_url}/stats") as response:
        world = await response.json()
    assert [e["kind"] for e in world["emails"]] == ["received", "confirmed"]
    assert world["crm"]["zoe"]["decision"] == "not approved in time"
    status, shown = await agents.get("/costs?service=Agent", admin=True)
    assert status == 200 and 0 < shown["total"] < 1.0 and shown["invocations"] == 1
