"""The `sidecar` CLI against a real sidecar."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import lmdb
import pytest

from tests.e2e.conftest import Cluster
from tests.procs import eventually, free_port, sidecar_cli


async def test_cli_invokes_lists_shows_and_edits_state(cluster: Cluster) -> None:
    done = await cluster.cli("invoke", "Counter/cli/add", "4")
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr
    invocation_id = done.stderr.strip().split()[-1]
    assert invocation_id.startswith("inv_")

    sent = await cluster.cli("invoke", "Counter/cli/add", "1", "--send", "--idempotency-key", "k1")
    assert sent.returncode == 0 and json.loads(sent.stdout)["status"] == "Accepted"

    listed = await cluster.cli("invocations", "list", "--key", "cli")
    assert listed.returncode == 0 and invocation_id in listed.stdout
    shown = await cluster.cli("invocations", "show", invocation_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "completed"
    readable = await cluster.cli("invocations", "show", invocation_id)
    assert readable.returncode == 0 and "status: completed" in readable.stdout and "Output" in readable.stdout
    listed_json = await cluster.cli("invocations", "list", "--key", "cli", "--json")
    assert invocation_id in [inv["id"] for inv in json.loads(listed_json.stdout)["invocations"]]

    assert (await cluster.cli("state", "set", "Counter", "cli", "count", "100")).returncode == 0
    got = await cluster.cli("state", "get", "Counter", "cli", "count")
    assert got.returncode == 0 and got.stdout.strip() == "100"
    services = await cluster.cli("services")
    assert services.returncode == 0 and "Counter" in services.stdout and "Steps" in services.stdout
    assert (await cluster.cli("services", "list")).stdout == services.stdout  # the verb form, same table
    names = {s["name"] for s in json.loads((await cluster.cli("services", "list", "--json")).stdout)["services"]}
    assert {"Counter", "Steps"} <= names
    deployments = json.loads((await cluster.cli("deployments", "list", "--json")).stdout)["deployments"]
    assert [d["status"] for d in deployments] == ["active"]
    again = await cluster.cli("deployments", "register", "--force", deployments[0]["uri"])
    assert again.returncode == 0 and "registered deployment" in again.stdout, again.stderr
    version = await cluster.cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("sidecar ")


async def test_cli_reports_server_errors_without_a_traceback(cluster: Cluster) -> None:
    failed = await cluster.cli("invoke", "Nope/x", "1")
    assert failed.returncode == 1
    assert "unknown service" in failed.stderr and "Traceback" not in failed.stderr


async def test_cli_resolves_an_awakeable_and_cancels(cluster: Cluster) -> None:
    _, body, _ = await cluster.post("/Waits/approval/send", "cli-a")

    async def note() -> str:
        async with cluster.http.get(f"{cluster.sink_url}/notes/cli-a") as response:
            return await response.json() if response.status == 200 else ""

    awakeable_id = await eventually(note, what="the awakeable ID")
    done = await cluster.cli("awakeable", "resolve", awakeable_id, '"from the cli"')
    assert done.returncode == 0, done.stderr
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, "approved: from the cli")
    again = await cluster.cli("awakeable", "resolve", awakeable_id, "1")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    parked = (await cluster.post("/Waits/park/send", 60))[1]["invocationId"]
    cancelled = await cluster.cli("invocations", "cancel", parked)
    assert cancelled.returncode == 0, cancelled.stderr
    assert (await cluster.get(f"/restate/invocation/{parked}/attach"))[0] == 409


async def test_cli_pauses_and_resumes_with_a_new_budget(cluster: Cluster) -> None:
    gate = cluster.tmp / "gate"  # the step runs until it exists: it is still running when paused
    invocation_id = (await cluster.post("/Steps/gated_step/send", str(gate)))[1]["invocationId"]

    async def running() -> bool:
        return (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]["status"] == "running"

    await eventually(running, what="the long step to start")
    paused = await cluster.cli("invocations", "pause", invocation_id)
    assert paused.returncode == 0, paused.stderr
    refused = await cluster.cli("invocations", "resume", invocation_id, "--budget", "-1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    resumed = await cluster.cli("invocations", "resume", invocation_id, "--budget", "2.5")
    assert resumed.returncode == 0, resumed.stderr
    gate.touch()
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, "done")
    assert (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]["budget"] == 2.5


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_data_directory_of_a_newer_layout_is_refused_in_one_line(tmp_path: Path, workers: str) -> None:
    data = tmp_path / "data"
    env = lmdb.open(str(data), max_dbs=20)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format", b"99")
    env.close()
    before = (data / "data.mdb").read_bytes()
    refused = subprocess.run(sidecar_cli("serve", "--data-dir", str(data), "--workers", workers,
                                         "--ingress", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}"),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "layout 99 is newer" in lines[0] and str(data) in lines[0], refused.stderr
    assert (data / "data.mdb").read_bytes() == before
