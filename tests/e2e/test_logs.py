"""What an operator reads in the logs by default: each failed attempt, backoff and pause, by invocation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Cluster, running_cluster
from tests.procs import eventually


async def _paused_crashy(cluster: Cluster, name: str) -> str:
    status, body, _ = await cluster.post("/Steps/crashy/send", name)
    assert status == 202, body
    invocation_id: str = body["invocationId"]

    async def paused() -> bool:
        return (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]["status"] == "paused"

    await eventually(paused, what="the retries to run out")
    return invocation_id


async def test_the_sidecar_logs_each_failed_attempt_and_the_pause_with_the_invocation_id(cluster: Cluster) -> None:
    invocation_id = await _paused_crashy(cluster, "logged")

    async def logged() -> list[str]:
        lines = [line for line in cluster.sidecar.log().splitlines() if invocation_id in line]
        return lines if any("paused" in line for line in lines) else []

    lines = await eventually(logged, what="the pause to be logged")
    failed = [line for line in lines if re.search(r"attempt \d+ failed: .*bug in handler code", line)]
    assert [re.search(r"attempt (\d+) failed", line).group(1) for line in failed] == ["1", "2", "3"], lines  # type: ignore[union-attr]
    assert sum("backing off" in line for line in failed) == 2, "the first two say how long they back off"
    assert [line for line in lines if "paused after 3 failures" in line] != [], lines
    assert all(" WARNING " in line for line in failed)
    assert "handler service listening on http://" in cluster.handlers.log()


async def test_reasons_show_times_in_iso_8601(cluster: Cluster) -> None:
    status, body, _ = await cluster.post("/Counter/later/add/send?delay=1h", 1)
    assert status == 202, body
    _, shown = await cluster.get(f"/invocations/{body['invocationId']}", admin=True)
    assert re.fullmatch(r"delayed: starts at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", shown["reason"]), shown
    assert shown["reason"].split(" at ", 1)[1] == shown["start_at"]


async def test_json_logs_are_one_object_per_line_with_the_invocation_id_as_a_field(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> None:
    flags = ["--durability", "none", "--workers", "2", "--log-format", "json"]
    async with running_cluster(tmp_path, http, request, flags, handler_flags=("--log-format", "json")) as cluster:
        invocation_id = await _paused_crashy(cluster, "json")
        status, body, _ = await cluster.post("/Steps/hopeless_step", "json-steps")
        assert status == 502, body

        def parsed(text: str) -> list[dict[str, object]]:
            lines = [json.loads(line) for line in text.splitlines() if line]  # each line is JSON
            for line in lines:
                assert {"time", "level", "logger", "message"} <= line.keys(), line
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"])), line
            return lines

        async def paused_logged() -> list[dict[str, object]]:
            about = [line for line in parsed(cluster.sidecar.log()) if line.get("invocation_id") == invocation_id]
            return about if any("paused" in str(line["message"]) for line in about) else []

        about = await eventually(paused_logged, what="the pause to be logged")
        assert sum("failed" in str(line["message"]) for line in about) == 3
        assert all(line["level"] == "warning" for line in about)
        handler_lines = parsed(cluster.handlers.log())
        assert any("listening on" in str(line["message"]) for line in handler_lines)
        retries = [line for line in handler_lines if "step 'vendor' attempt" in str(line["message"])]
        assert len(retries) == 2 and all(str(line.get("invocation_id", "")).startswith("inv_") for line in retries), \
            handler_lines
