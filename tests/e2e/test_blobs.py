"""Large payloads over real processes: stored once by content, read back after crashes, shown by
the admin API as their blob, released by a purge."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
import zstandard

from tests.e2e.bulky import digest, text
from tests.e2e.conftest import Cluster, running_cluster
from tests.e2e.sse import read_events, subscribe
from tests.procs import eventually

_FLAGS = ["--durability", "none", "--inactivity-timeout", "3", "--workers", "1"]
MiB = 1024 * 1024


@pytest.fixture
async def bulky(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, http, request, _FLAGS, handlers="tests.e2e.bulky:SERVICES") as running:
        yield running


async def _metric(cluster: Cluster, name: str) -> float:
    async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
        found = re.search(rf"^{name} (\S+)$", await response.text(), re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


async def _gate_hit(cluster: Cluster, name: str) -> bool:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return (await response.json())["counters"].get(f"gate-{name}") == 1


async def test_a_large_step_result_is_stored_once_survives_a_sidecar_kill_and_is_served(bulky: Cluster) -> None:
    size = 5 * MiB
    status, sent, _ = await bulky.post("/Bulky/a/make/send", {"size": size, "gate": "a"})
    assert status == 202
    await eventually(lambda: _gate_hit(bulky, "a"), what="the step after the large one to hang")
    bulky.sidecar.kill()
    await bulky.start_sidecar()
    attached = await bulky.get(f"/restate/invocation/{sent['invocationId']}/attach")
    value = msgspec.json.encode(text(size, 0))
    assert attached == (200, {"digests": [digest(text(size, 0))], "state": None})  # replayed from the blob

    _, shown = await bulky.get(f"/invocations/{sent['invocationId']}", admin=True)
    [made] = [e for e in shown["journal"] if e.get("name") == "make0"]
    assert made["value"] == {"blob": digest(text(size, 0)), "size": len(value),
                             "preview": value[:256].decode()}
    async with bulky.http.get(f"http://{bulky.admin}/blobs/{made['value']['blob']}") as response:
        assert response.status == 200 and await response.read() == value
    for path, status in [("/blobs/" + "0" * 64, 404), ("/blobs/xyz", 400), ("/blobs/" + "A" * 64, 400)]:
        code, body = await bulky.get(path, admin=True)
        assert (code, body["code"]) == (status, status), path
    assert await _metric(bulky, "sidecar_blobs") == 1

    assert (await bulky.admin_call("DELETE", f"/invocations/{sent['invocationId']}"))[0] == 200
    assert await _metric(bulky, "sidecar_blobs") == 0  # the purge released it, in its own batch


async def test_ten_identical_values_take_the_room_of_one(bulky: Cluster) -> None:
    size = 2 * MiB
    data_file = bulky.data_dir / "data.mdb"
    before = data_file.stat().st_size
    status, output, headers = await bulky.post("/Bulky/b/make", {"size": size, "copies": 10, "state": True})
    assert status == 200 and output == {"digests": [digest(text(size, 0))], "state": digest(text(size, 0))}
    one = len(zstandard.ZstdCompressor(level=3).compress(msgspec.json.encode(text(size, 0))))
    assert await _metric(bulky, "sidecar_blobs") == 1  # eleven references (ten steps, the state), one blob
    assert await _metric(bulky, "sidecar_blob_bytes") < one * 1.1
    grown = data_file.stat().st_size - before
    assert grown < 2.5 * one, (grown, one)  # uncompressed, the ten would be over 13 times one
    assert (await bulky.admin_call("DELETE", f"/invocations/{headers['x-restate-id']}"))[0] == 200
    assert await _metric(bulky, "sidecar_blobs") == 1  # the state still refers to it
    assert (await bulky.admin_call("DELETE", "/state/Bulky/b/big"))[0] == 200
    assert await _metric(bulky, "sidecar_blobs") == 0


async def test_a_killed_handler_replays_its_large_values_with_a_cold_cache(bulky: Cluster) -> None:
    status, sent, _ = await bulky.post("/Bulky/h/make/send", {"size": MiB, "copies": 3, "seed": 4, "gate": "h"})
    assert status == 202
    await eventually(lambda: _gate_hit(bulky, "h"), what="the step after the large ones to hang")
    bulky.handlers.kill()
    await bulky.restart_handlers()
    attached = await bulky.get(f"/restate/invocation/{sent['invocationId']}/attach")
    assert attached == (200, {"digests": [digest(text(MiB, 4))], "state": None})


async def test_a_handler_that_keeps_no_blobs_asks_for_them_on_replay(
        tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    """The sidecar believes the handler holds what it sent on the link; with no cache it does
    not, and its resumed attempt (after a suspension, on the same link) fetches them."""
    flags = ("--blob-cache-bytes", "0", "--suspend-after", "0")
    async with running_cluster(tmp_path, http, request, _FLAGS, handlers="tests.e2e.bulky:SERVICES",
                               handler_flags=flags) as cluster:
        status, output, _ = await cluster.post("/Bulky/n/make", {"size": MiB, "copies": 2, "nap": 0.2})
        assert (status, output) == (200, {"digests": [digest(text(MiB, 0))], "state": None})


async def test_step_and_state_values_over_max_payload_bytes_fail_as_terminal(
        tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    async with running_cluster(tmp_path, http, request, [*_FLAGS, "--max-payload", str(MiB)],
                               handlers="tests.e2e.bulky:SERVICES") as cluster:
        status, output, headers = await cluster.post("/Bulky/o/oversize", 2 * MiB)
        assert status == 200, output
        over = f"is {2 * MiB + 2} bytes, over the sidecar's max_payload_bytes ({MiB})"
        assert output["step"][0] == 413 and f"the value of step 'huge' {over}" in output["step"][1]
        assert output["state"][0] == 413 and f"state value 'huge' {over}" in output["state"][1]
        _, shown = await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True)
        [step] = [e for e in shown["journal"] if e.get("name") == "huge"]
        assert step["failure"]["code"] == 413 and step["value"] is None  # replays fail the same way


async def test_a_journal_and_a_state_that_grow_past_their_limits_get_warnings(
        tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text(f"warn_journal_bytes = {MiB}\nwarn_state_bytes = {MiB}\n")
    async with running_cluster(tmp_path, http, request, [*_FLAGS, "--config", str(config)],
                               handlers="tests.e2e.bulky:SERVICES") as cluster:
        status, sent, _ = await cluster.post("/Bulky/w/make/send", {"size": MiB + 10, "state": True, "nap": 0.3})
        assert status == 202
        invocation_id = sent["invocationId"]
        stream = await subscribe(cluster, invocation_id)
        messages = await read_events(stream)
        warnings = [(kind, data["kind"], data["index"]) for _, kind, data in messages if kind == "warning"]
        assert warnings == [("warning", "journal", 1), ("warning", "state", 2)]
        assert messages[-1][1] == "end" and messages[-1][2]["status"] == "completed"  # never a crash
        _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
        assert [(w["kind"], w["limit"]) for w in shown["warnings"]] == [("journal", MiB), ("state", MiB)]
        assert "past warn_state_bytes" in shown["warnings"][1]["message"]
        async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
            metrics = await response.text()
        assert 'sidecar_growth_warnings_total{kind="journal"} 1.0' in metrics
        assert 'sidecar_growth_warnings_total{kind="state"} 1.0' in metrics
