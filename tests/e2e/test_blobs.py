"""Large payloads over real processes: stored once by content, read back after crashes, shown by
the admin API as their blob, released by a purge and by the retention sweep."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import lmdb
import msgspec
import pytest
import zstandard

from handler_sdk.protocol import Input, Output, Run
from sidecar.ids import IdGenerator
from sidecar.store import InvocationRecord, keys
from sidecar.store.environment import DATABASES
from sidecar.store.lmdb_store import encode_entry, encode_record
from tests.e2e.bulky import digest, text
from tests.e2e.conftest import Cluster, running_cluster
from tests.e2e.sse import read_events, subscribe
from tests.procs import Process, eventually, free_port, python

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


async def test_a_request_response_deployment_is_sent_its_blobs_with_each_start(bulky: Cluster) -> None:
    port = free_port()
    service = Process("serverless", python("-m", "handler_sdk", "tests.e2e.bulky:SERVICES", "--port", str(port)),
                      bulky.tmp, {"SINK_URL": bulky.sink_url}).start()
    try:
        await eventually(lambda: bulky._ok(f"http://127.0.0.1:{port}/discover"), what="the handler service")
        registered = await bulky.cli("register", f"http://127.0.0.1:{port}", "--request-response", "--force")
        assert registered.returncode == 0, registered.stderr
        status, output, _ = await bulky.post("/Bulky/rr/make", {"size": 2 * MiB, "copies": 2, "nap": 0.1})
        assert (status, output) == (200, {"digests": [digest(text(2 * MiB, 0))], "state": None})
    finally:
        service.stop()


async def test_a_layout_4_directory_is_upgraded_by_the_sidecar_that_opens_it(
        tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    """A data directory a sidecar before blobs wrote: its large payloads become blobs at start,
    and everything reads back as it was written."""
    value = msgspec.json.encode(text(MiB, 9))
    record = InvocationRecord(id=IdGenerator().invocation_id(), service="Bulky", handler="make", key="old",
                              handler_kind="exclusive", status="completed", deployment_id="dp_old", created_ms=1,
                              modified_ms=2, completed_ms=2, output=value)
    env = lmdb.open(str(tmp_path / "data"), max_dbs=len(DATABASES) + 1, map_size=1 << 28)
    dbs = {name: env.open_db(name.encode()) for name in DATABASES if name not in ("blobs", "blob_refs")}
    with env.begin(write=True) as txn:
        txn.put(b"format", b"4", db=dbs["meta"])
        txn.put(record.id.encode(), encode_record(record), db=dbs["invocations"])
        for index, entry in enumerate([Input(b"{}"), Run("make0", value=value), Output(value=value)]):
            txn.put(keys.journal_key(record.id, index), encode_entry(entry), db=dbs["journal"])
    env.close()

    async with running_cluster(tmp_path, http, request, _FLAGS, handlers="tests.e2e.bulky:SERVICES") as cluster:
        _, shown = await cluster.get(f"/invocations/{record.id}", admin=True)
        assert shown["output"]["blob"] == digest(text(MiB, 9)) == shown["journal"][1]["value"]["blob"]
        assert await _metric(cluster, "sidecar_blobs") == 1  # three references, one blob
        async with cluster.http.get(f"http://{cluster.admin}/blobs/{shown['output']['blob']}") as response:
            assert await response.read() == value
        assert (await cluster.admin_call("DELETE", f"/invocations/{record.id}"))[0] == 200
        assert await _metric(cluster, "sidecar_blobs") == 0


@pytest.fixture
async def short_lived(tmp_path: Path, http: aiohttp.ClientSession,
                      request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    flags = [*_FLAGS, "--retention", "2"]
    async with running_cluster(tmp_path, http, request, flags, handlers="tests.e2e.bulky:SERVICES") as running:
        yield running


async def test_retention_sweeps_finished_journals_their_blobs_and_keys_and_nothing_else(short_lived: Cluster) -> None:
    cluster, size = short_lived, 256 * 1024
    status, _, finished = await cluster.post("/Bulky/gone/make", {"size": size, "copies": 2, "seed": 1},
                                             headers={"idempotency-key": "once"})
    assert status == 200
    status, _, kept_in_state = await cluster.post("/Bulky/kept/make", {"size": size, "seed": 2, "state": True})
    assert status == 200
    status, waiting, _ = await cluster.post("/Bulky/open/make/send", {"size": size, "seed": 3, "gate": "open"})
    assert status == 202
    await eventually(lambda: _gate_hit(cluster, "open"), what="the unfinished invocation to reach its gate")
    assert await _metric(cluster, "sidecar_blobs") == 3

    async def swept() -> bool:
        gone = (await cluster.get(f"/invocations/{finished['x-restate-id']}", admin=True))[0] == 404
        return gone and (await cluster.get(f"/invocations/{kept_in_state['x-restate-id']}", admin=True))[0] == 404
    await eventually(swept, timeout=30, what="the finished invocations to be swept")
    assert await _metric(cluster, "sidecar_blobs") == 2  # the finished journal's; the state's and the open one's stay
    status, shown = await cluster.get(f"/invocations/{waiting['invocationId']}", admin=True)
    assert status == 200 and [e["value"]["size"] for e in shown["journal"] if e["kind"] == "Run"] == [
        len(msgspec.json.encode(text(size, 3)))]
    state = (await cluster.get("/state/Bulky/kept", admin=True))[1]["state"]
    assert state["big"] == text(size, 2)
    # Its idempotency key went with it: the same key starts a new invocation.
    status, _, again = await cluster.post("/Bulky/gone/make", {"size": size, "copies": 2, "seed": 1},
                                          headers={"idempotency-key": "once"})
    assert status == 200 and again["x-restate-id"] != finished["x-restate-id"]
