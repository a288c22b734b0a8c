"""Calls between handlers and workflows, end to end across two workers."""

from __future__ import annotations

import time
from datetime import datetime

from tests.e2e.conftest import Cluster
from tests.procs import Process, eventually, free_port, python


async def test_object_and_service_calls_and_one_way_sends(cluster: Cluster) -> None:
    for key in ("r1", "r2", "r3"):  # callers and callees spread over both workers' partitions
        assert (await cluster.post(f"/Callers/{key}/relay", 5))[:2] == (200, 5)

    async def sent() -> bool:
        return (await cluster.post("/Counter/relay-r3/get"))[1] == 105

    await eventually(sent, what="the one-way add to land")
    assert (await cluster.post("/Callers/x/ask_refuse"))[:2] == (200, "422: refused: no stock")


async def test_an_exclusive_call_cycle_is_refused_with_a_clear_error(cluster: Cluster) -> None:
    status, body, _ = await cluster.post("/Callers/loop/ping", 2)
    assert status == 200
    assert body.startswith("refused 409: call cycle would deadlock key Callers/loop")


async def test_a_call_completes_once_across_sidecar_crashes(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    _, body, _ = await cluster.post("/Callers/c1/once/send", "call-crash")

    async def halfway() -> bool:
        return sum((await cluster.sink_counts()).values()) >= 5

    await eventually(halfway, what="the callee to be halfway")
    cluster.sidecar.kill()
    await cluster.start_sidecar()
    status, result = await cluster.get(f"/restate/invocation/{body['invocationId']}/attach")
    assert (status, result) == (200, [i * i for i in range(20)])
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        assert (await response.json())["violations"] == []
    assert len(await cluster.sink_counts()) == 20


async def test_a_workflow_runs_once_and_waits_for_its_promise(cluster: Cluster) -> None:
    status, accepted, _ = await cluster.post("/Signup/ann/run/send", "ann@example.com")
    assert status == 202
    assert (await cluster.post("/Signup/ann/run/send", "ann@example.com"))[1]["status"] == "PreviouslyAccepted"
    status, body, _ = await cluster.post("/Signup/ann/run", "ann@example.com")
    assert status == 409 and "already" in body["message"]

    async def waiting() -> bool:
        return (await cluster.post("/Signup/ann/status"))[1] == "waiting for approval"

    await eventually(waiting, what="the workflow to wait")
    assert (await cluster.get("/restate/workflow/Signup/ann/output"))[0] == 470
    assert (await cluster.post("/Signup/ann/approve", "yes"))[:2] == (200, "recorded")
    assert await cluster.get("/restate/workflow/Signup/ann/attach") == (200, "ann@example.com: yes")
    assert await cluster.get(f"/restate/invocation/{accepted['invocationId']}/output") == (200, "ann@example.com: yes")
    status, body, _ = await cluster.post("/Signup/ann/approve", "no")
    assert status == 409 and "already completed" in body["message"]


async def test_an_approval_that_arrives_before_the_run_awaits_is_kept(cluster: Cluster) -> None:
    assert (await cluster.post("/Signup/bob/approve", "early"))[:2] == (200, "recorded")
    assert (await cluster.post("/Signup/bob/run", "bob@example.com"))[:2] == (200, "bob@example.com: early")


async def test_a_workflow_called_from_handlers_on_either_worker_still_runs_once(cluster: Cluster) -> None:
    assert (await cluster.post("/Signup/cid/run/send", "cid@example.com"))[0] == 202
    for caller in ("w1", "w2", "w3", "w4"):  # callers in both workers' partitions
        status, result, _ = await cluster.post(f"/Callers/{caller}/rerun", "cid")
        assert status == 200 and result.startswith("409: workflow Signup/cid already ran"), result


async def _latecomer_pings(cluster: Cluster) -> list[str]:
    _, listed = await cluster.get("/invocations?service=Latecomer&limit=100", admin=True)
    return [i["status"] for i in listed["invocations"]]


async def _register_latecomer(cluster: Cluster) -> Process:
    port = free_port()
    latecomer = Process("latecomer", python("-m", "handler_sdk", "tests.e2e.latecomer:latecomer",
                                            "--port", str(port)), cluster.tmp).start()
    await eventually(lambda: cluster._ok(f"http://127.0.0.1:{port}/discover"), what="the latecomer")
    status, body = await cluster.admin_call("POST", "/deployments", {"uri": f"http://127.0.0.1:{port}"})
    assert status in (200, 201), body
    return latecomer


async def test_a_send_to_a_service_not_yet_registered_is_made_once_it_is(durable_cluster: Cluster) -> None:
    """The sender finishes at once; its send waits, across a crash, for a deployment that has
    the target, and is then made exactly once."""
    cluster = durable_cluster
    status, body, _ = await cluster.post("/Callers/late/notify", "Latecomer")
    assert (status, body) == (200, "sent")
    assert await _latecomer_pings(cluster) == []
    cluster.sidecar.kill()
    await cluster.start_sidecar()
    latecomer = await _register_latecomer(cluster)
    try:
        async def pinged() -> bool:
            statuses = await _latecomer_pings(cluster)
            assert len(statuses) <= 1, statuses
            return statuses == ["completed"]

        await eventually(pinged, what="the parked send to be made")
        cluster.sidecar.kill()  # a restart must not make it again
        await cluster.start_sidecar()
        assert await _latecomer_pings(cluster) == ["completed"]
    finally:
        latecomer.stop()


async def test_a_parked_send_s_delay_counts_from_when_it_was_sent(cluster: Cluster) -> None:
    """Due one second after it was sent, a send whose target is registered later than that
    starts at registration, without waiting its delay a second time."""
    status, body, _ = await cluster.post("/Callers/late/notify_later", "Latecomer")
    assert (status, body) == (200, "sent")
    due_ms = time.time() * 1000 + 1000  # no earlier than the send's due time

    async def due() -> bool:
        return time.time() * 1000 > due_ms

    await eventually(due, what="the send to be due")
    registered_ms = time.time() * 1000
    latecomer = await _register_latecomer(cluster)
    try:
        async def pinged() -> bool:
            return await _latecomer_pings(cluster) == ["completed"]

        await eventually(pinged, what="the parked send to be made")
        _, listed = await cluster.get("/invocations?service=Latecomer", admin=True)
        _, ping = await cluster.get(f"/invocations/{listed['invocations'][0]['id']}", admin=True)
        start_at = ping["start_at"]
        assert start_at is None or _epoch_ms(start_at) <= registered_ms, (start_at, registered_ms)
    finally:
        latecomer.stop()


def _epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


async def test_sends_to_one_key_keep_their_order_across_workers_and_a_sigkill(durable_cluster: Cluster) -> None:
    """Callers in both workers' partitions send to one busy key; the sidecar dies while the sends
    wait in the key's inbox. After the restart each caller's sends run in the order it made them
    (the inbox keeps the order its owner accepted them in, not the order of their random IDs)."""
    cluster = durable_cluster
    status, _, _ = await cluster.post("/Counter/fan/hold/send", 1500)  # the key is busy meanwhile
    assert status == 202
    callers = [f"f{n}" for n in range(4)]
    for caller in callers:
        assert (await cluster.post(f"/Callers/{caller}/fan_out", 15))[:2] == (200, "sent")
    cluster.sidecar.kill()
    await cluster.start_sidecar()

    async def all_ran() -> list[str]:
        status, items = (await cluster.post("/Counter/fan/items"))[:2]
        return items if status == 200 and len(items) == 15 * len(callers) else []

    items = await eventually(all_ran, timeout=30, what="every send to run")
    for caller in callers:
        assert [i for i in items if i.startswith(f"{caller}-")] == [f"{caller}-{i}" for i in range(15)]
