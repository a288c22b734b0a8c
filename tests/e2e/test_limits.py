"""Limit groups over real processes: a group of concurrency 2 never has 3 steps inside at once
across two handler processes and two workers; a SIGKILLed handler does not keep its slot; a step
naming a group the sidecar does not have fails with a 400 that names it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.test_breakers import _shown as _status, two_handler_processes
from tests.procs import eventually

_FLAGS = ["--durability", "none", "--inactivity-timeout", "3", "--workers", "2",
          "--limit", "anthropic=concurrency:2", "--limit", "solo=concurrency:1,rate:100/s"]


@pytest.fixture
async def limited(tmp_path: Path, http: aiohttp.ClientSession,
                  request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with two_handler_processes(tmp_path, http, request, _FLAGS) as cluster:
        yield cluster


async def _stats(cluster: Cluster) -> dict[str, Any]:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return dict(await response.json())


async def _send(cluster: Cluster, path: str, body: Any) -> str:
    status, answer, _ = await cluster.post(f"{path}/send", body)
    assert status == 202, answer
    return str(answer["invocationId"])


async def test_a_group_of_two_never_has_three_inside_across_two_processes(limited: Cluster) -> None:
    ids = await asyncio.gather(*(_send(limited, f"/{service}/limited", "anthropic")
                                 for service in ("VendorA", "VendorB") for _ in range(3)))

    async def all_completed() -> bool:
        shown = [await _status(limited, i) for i in ids]
        return all(s["status"] == "completed" for s in shown)
    await eventually(all_completed, timeout=30, what="the six invocations to complete")
    stats = await _stats(limited)
    assert stats["peaks"]["anthropic"] == 2  # two at once, never three
    for invocation_id in ids:  # a step waiting for its slot journaled nothing: Input, the step, Output
        assert [e["kind"] for e in (await _status(limited, invocation_id))["journal"]] == ["Input", "Run", "Output"]
    _, metrics = await limited.get("/metrics", admin=True)
    assert 'sidecar_limit_slots_in_use{name="anthropic"} 0.0' in metrics
    assert 'sidecar_limit_waiting{name="anthropic"} 0.0' in metrics


async def test_a_sigkilled_handler_does_not_keep_its_slot(limited: Cluster) -> None:
    holder = await _send(limited, "/VendorA/hang", "first")

    async def hanging() -> bool:
        return (await _stats(limited))["counters"].get("hang-first") == 1
    await eventually(hanging, what="the first step to hang inside the group's one slot")
    waiter = await _send(limited, "/VendorB/limited", "solo")

    async def parked() -> bool:  # past the handler's suspend_after (1 s), its attempt is freed
        shown = await _status(limited, waiter)
        return shown["status"] == "backing-off" and shown["last_error"] == "waiting for a slot of limit solo"
    await eventually(parked, what="the second invocation to wait for the slot without an attempt")
    assert "solo" not in (await _stats(limited))["peaks"]  # its function never ran

    limited.handlers.kill()  # SIGKILL: VendorA's attempt, and the slot it held, are gone

    async def second_completed() -> bool:
        return (await _status(limited, waiter))["status"] == "completed"
    await eventually(second_completed, what="the second invocation to get the slot and complete")
    assert (await _status(limited, holder))["status"] == "backing-off"


async def test_a_group_the_sidecar_does_not_have_fails_the_step_with_a_400_naming_it(limited: Cluster) -> None:
    status, body, _ = await limited.post("/VendorA/limited", "antropic")
    assert status == 400, body
    assert "no limit group named 'antropic' (configured: anthropic, solo)" in body["message"]
