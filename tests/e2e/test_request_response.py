"""A deployment registered for request-response mode (``POST /invoke``), end to end: steps,
state, a durable sleep, a call between handlers and a cooperative cancel, as over a socket."""

from __future__ import annotations

from tests.e2e.conftest import Cluster
from tests.procs import Process, eventually, free_port, python


async def _register_request_response(cluster: Cluster) -> tuple[Process, str]:
    port = free_port()
    service = Process("serverless", python("-m", "handler_sdk", "tests.e2e.handlers:SERVICES", "--port", str(port)),
                      cluster.tmp, {"SINK_URL": cluster.sink_url}).start()
    await eventually(lambda: cluster._ok(f"http://127.0.0.1:{port}/discover"), what="the handler service")
    registered = await cluster.cli("register", f"http://127.0.0.1:{port}", "--request-response")
    assert registered.returncode == 0, registered.stderr
    _, listed = await cluster.get("/deployments", admin=True)
    (deployment,) = [d for d in listed["deployments"] if d["uri"] == f"http://127.0.0.1:{port}"]
    assert deployment["transport"] == "request-response" and deployment["status"] == "active"
    return service, deployment["id"]


async def _sink_count(cluster: Cluster, name: str) -> int:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return (await response.json())["counters"].get(name, 0)


async def test_a_request_response_deployment_runs_steps_waits_calls_and_cancels(cluster: Cluster) -> None:
    service, deployment_id = await _register_request_response(cluster)
    try:
        assert (await cluster.post("/Counter/rr/add", 5))[:2] == (200, 5)
        status, total, headers = await cluster.post("/Counter/rr/add", 2)
        assert (status, total) == (200, 7)
        shown = (await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True))[1]
        assert shown["deployment_id"] == deployment_id
        assert [e["kind"] for e in shown["journal"]] == ["Input", "GetState", "Run", "SetState", "Output"]
        assert shown["attempts"] == 2  # one request up to the step, one after it was durable

        assert (await cluster.post("/Waits/nap", "rr"))[:2] == (200, "rested")  # suspended, woken by its timer
        assert await _sink_count(cluster, "wake-rr") == 1
        assert (await cluster.post("/Callers/rr/relay", 3))[:2] == (200, 3)  # a call, both sides by request

        _, accepted, _ = await cluster.post("/Waits/compensating/send", "rr")
        invocation_id = accepted["invocationId"]

        async def suspended() -> bool:
            return (await cluster.get(f"/invocations/{invocation_id}", admin=True))[1]["status"] == "suspended"

        await eventually(suspended, what="the booking to wait")
        assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/cancel"))[0] == 202
        status, error = await cluster.get(f"/restate/invocation/{invocation_id}/attach")
        assert status == 409 and "cancel" in error["message"]
        assert (await _sink_count(cluster, "book-rr"), await _sink_count(cluster, "unbook-rr")) == (1, 1)
    finally:
        service.stop()
