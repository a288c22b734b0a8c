"""Operator actions end to end: cancel with compensation, pause and resume, restart, deadlines."""

from __future__ import annotations

from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def _shown(cluster: Cluster, invocation_id: str) -> dict:
    return (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]


async def _counters(cluster: Cluster) -> dict[str, int]:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return (await response.json())["counters"]


async def test_cancel_reaches_the_waiting_handler_which_compensates(cluster: Cluster) -> None:
    _, body, _ = await cluster.post("/Waits/compensating/send", "trip")
    invocation_id = body["invocationId"]

    async def suspended() -> bool:
        return (await _shown(cluster, invocation_id))["status"] == "suspended"

    await eventually(suspended, what="the invocation to wait")
    assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/cancel"))[0] == 202
    status, error = await cluster.get(f"/restate/invocation/{invocation_id}/attach")
    assert status == 409 and "cancel" in error["message"]
    assert (await _shown(cluster, invocation_id))["status"] == "cancelled"
    counters = await _counters(cluster)
    assert (counters["book-trip"], counters["unbook-trip"]) == (1, 1)
    assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/cancel"))[0] == 409


async def test_pause_and_resume_give_a_paused_invocation_new_attempts(cluster: Cluster) -> None:
    _, body, _ = await cluster.post("/Steps/crashy/send", "p1")
    invocation_id = body["invocationId"]

    async def paused() -> bool:
        return (await _shown(cluster, invocation_id))["status"] == "paused"

    await eventually(paused, what="the retries to run out")
    assert (await _counters(cluster))["p1"] == 3
    assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/resume"))[0] == 202

    async def paused_again() -> bool:
        return await paused() and (await _counters(cluster))["p1"] == 6

    await eventually(paused_again, what="three more attempts")
    status, error = await cluster.admin_call("POST", f"/invocations/{invocation_id}/resume",
                                             {"deployment": "dp_nope"})
    assert status == 404 and "dp_nope" in error["message"]
    assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/kill"))[0] == 202
    assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/pause"))[0] == 409


async def test_restart_runs_a_finished_invocation_again_with_its_input(cluster: Cluster) -> None:
    _, _, headers = await cluster.post("/Counter/again/add", 4)
    status, body = await cluster.admin_call("POST", f"/invocations/{headers['x-restate-id']}/restart")
    assert status == 201
    assert await cluster.get(f"/restate/invocation/{body['id']}/attach") == (200, 8)
    status, _ = await cluster.admin_call("POST", f"/invocations/{headers['x-restate-id']}/restart?from=99")
    assert status == 409


async def test_a_restarted_workflow_run_becomes_the_keys_run(cluster: Cluster) -> None:
    """Attach and output by key answer with the restarted run; purging the first run leaves the
    key's slot, state and promises to the second."""
    assert (await cluster.post("/Signup/rita/approve", "yes"))[:2] == (200, "recorded")
    status, first_output, headers = await cluster.post("/Signup/rita/run", "rita@example.com")
    assert (status, first_output) == (200, "rita@example.com: yes")
    first = headers["x-restate-id"]
    status, restarted = await cluster.admin_call("POST", f"/invocations/{first}/restart")
    assert status == 201

    async def attached_by_key() -> tuple[int, str, str]:
        async with cluster.http.get(f"http://{cluster.ingress}/restate/workflow/Signup/rita/attach") as response:
            return response.status, await response.json(), response.headers.get("x-restate-id", "")

    assert await attached_by_key() == (200, "rita@example.com: yes", restarted["id"])
    assert (await cluster.admin_call("DELETE", f"/invocations/{first}"))[0] == 200
    assert await attached_by_key() == (200, "rita@example.com: yes", restarted["id"])
    assert (await cluster.post("/Signup/rita/status"))[:2] == (200, "yes")  # the key's state is kept
    assert (await cluster.post("/Signup/rita/run", "again@example.com"))[0] == 409


async def test_a_total_timeout_fails_the_invocation_with_408_even_while_it_waits(cluster: Cluster) -> None:
    status, error, _ = await cluster.post("/Waits/slowpoke")
    assert status == 408 and "timed out after 1 s" in error["message"]


async def test_cancelling_a_caller_cancels_the_call_it_waits_on(cluster: Cluster) -> None:
    _, body, _ = await cluster.post("/Callers/cc/once/send", "cancel-chain")
    caller = body["invocationId"]

    async def child_id() -> str:
        journal = (await _shown(cluster, caller))["journal"]
        calls = [e for e in journal if e["kind"] == "Call" and e["invocation_id"]]
        return calls[0]["invocation_id"] if calls else ""

    child = await eventually(child_id, what="the call to start")
    assert (await cluster.admin_call("POST", f"/invocations/{caller}/cancel"))[0] == 202
    assert (await cluster.get(f"/restate/invocation/{caller}/attach"))[0] == 409

    async def child_cancelled() -> bool:
        return (await _shown(cluster, child))["status"] == "cancelled"

    await eventually(child_cancelled, what="the callee to be cancelled too")
    assert sum((await cluster.sink_counts()).values()) < 20  # it stopped before its last step
