"""Rolling out a deployment end to end: the old one drains while its invocations finish, and can
be deleted only once nothing is pinned to it and it serves nothing new."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Cluster
from tests.procs import Process, eventually, free_port, python


async def _deployments(cluster: Cluster) -> dict[str, dict[str, Any]]:
    status, listed = await cluster.get("/deployments", admin=True)
    assert status == 200
    return {d["id"]: d for d in listed["deployments"]}


async def test_an_old_deployment_drains_then_is_deleted(cluster: Cluster) -> None:
    (old_id,) = await _deployments(cluster)
    status, held, _ = await cluster.post("/Counter/pinned/hold/send", 120_000)
    assert status == 202

    port = free_port()
    successor = Process("successor", python("-m", "handler_sdk", "tests.e2e.handlers:SERVICES", "--port", str(port)),
                        cluster.tmp, {"SINK_URL": cluster.sink_url}).start()
    try:
        await eventually(lambda: cluster._ok(f"http://127.0.0.1:{port}/discover"), what="the new deployment")
        status, new = await cluster.admin_call("POST", "/deployments", {"uri": f"http://127.0.0.1:{port}"})
        assert status == 201, new
        listed = await _deployments(cluster)
        assert (listed[old_id]["status"], listed[old_id]["pinned_invocations"]) == ("draining", 1)
        assert listed[new["id"]]["status"] == "active" and "Counter" in listed[new["id"]]["serving"]

        status, error = await cluster.admin_call("DELETE", f"/deployments/{old_id}")
        assert status == 409 and "1 unfinished invocations are pinned" in error["message"]
        status, error = await cluster.admin_call("DELETE", f"/deployments/{new['id']}")
        assert status == 409 and "register the deployment that replaces it first" in error["message"]
        assert (await cluster.admin_call("DELETE", "/deployments/dp_nothing"))[0] == 404

        status, _, headers = await cluster.post("/Counter/fresh/add", 1)  # new work goes to the new one
        assert status == 200
        shown = (await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True))[1]
        assert shown["deployment_id"] == new["id"]

        assert (await cluster.admin_call("POST", f"/invocations/{held['invocationId']}/kill"))[0] == 202

        async def drained() -> bool:
            return (await _deployments(cluster))[old_id]["status"] == "drained"

        await eventually(drained, what="the old deployment to drain")
        listing = await cluster.cli("deployments")
        assert listing.returncode == 0 and old_id in listing.stdout and "drained" in listing.stdout, listing

        deleted = await cluster.cli("deployments", "delete", old_id)
        assert deleted.returncode == 0 and deleted.stdout.strip() == f"deleted deployment {old_id}", deleted
        assert list(await _deployments(cluster)) == [new["id"]]
        assert (await cluster.post("/Counter/fresh/add", 1))[:2] == (200, 2)
    finally:
        successor.stop()
