"""Event streams end to end: ``ctx.publish`` read as Server-Sent Events while the handler runs,
resumed with ``Last-Event-ID``, replayed to late subscribers, and across a sidecar crash."""

from __future__ import annotations

from tests.e2e.conftest import Cluster
from tests.e2e.sse import read_events, stage, subscribe


async def _start_chat(cluster: Cluster, prompt: str) -> str:
    status, accepted, _ = await cluster.post("/Streams/chat/send", prompt)
    assert status == 202
    return accepted["invocationId"]


async def _resolve(cluster: Cluster, awakeable_id: str, verdict: str) -> None:
    async with cluster.http.post(f"http://{cluster.ingress}/restate/awakeables/{awakeable_id}/resolve",
                                 json=verdict) as resolved:
        assert resolved.status == 202


async def test_a_subscriber_sees_milestones_and_tokens_as_they_come_then_the_end(cluster: Cluster) -> None:
    invocation_id = await _start_chat(cluster, "hello brave world")
    async with await subscribe(cluster, invocation_id) as stream:
        so_far = await read_events(stream, until=stage("review"))  # the handler is waiting now: this is live
        assert [(i, kind) for i, kind, _ in so_far] == [
            ("1", "milestone"), ("2.0", "token"), ("2.1", "token"), ("2.2", "token"), ("4", "milestone")]
        assert [data for _, _, data in so_far[:4]] == [{"stage": "thinking"}, "hello", "brave", "world"]
        await _resolve(cluster, so_far[-1][2]["awakeable"], "ship it")
        rest = await read_events(stream)
    assert rest == [("5", "milestone", {"stage": "done", "verdict": "ship it"}),
                    (None, "end", {"status": "completed", "output": "HELLO BRAVE WORLD (ship it)", "failure": None})]

    # Resumed after the review milestone: only what followed it.
    async with await subscribe(cluster, invocation_id, last="4") as stream:
        assert await read_events(stream) == rest
    # A late subscriber gets every milestone again, once, and the end, from either worker (each
    # connection lands on one of the two; the owner's pages reach the other over the mesh).
    for _ in range(4):
        async with await subscribe(cluster, invocation_id) as stream:
            late = await read_events(stream)
        assert [i for i, kind, _ in late if kind != "token"] == ["1", "4", "5", None]


async def test_bad_requests_get_json_errors(cluster: Cluster) -> None:
    status, error = await cluster.get("/restate/invocation/inv_01M8C5ZDZ50CR4RNHTYTQHFYN8/events")
    assert status == 404 and error["code"] == 404
    invocation_id = await _start_chat(cluster, "hi")
    async with cluster.http.get(f"http://{cluster.ingress}/restate/invocation/{invocation_id}/events",
                                headers={"Last-Event-ID": "soon"}) as response:
        assert response.status == 400
        assert "Last-Event-ID 'soon'" in (await response.json())["message"]


async def test_a_stream_resumes_across_a_sidecar_crash_without_repeats(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    invocation_id = await _start_chat(cluster, "one two")
    async with await subscribe(cluster, invocation_id) as stream:
        before = await read_events(stream, until=stage("review"))
        cluster.sidecar.kill()
    await cluster.start_sidecar()
    last, awakeable_id = before[-1][0], before[-1][2]["awakeable"]

    async with await subscribe(cluster, invocation_id, last=last) as stream:
        await _resolve(cluster, awakeable_id, "ok")
        after = await read_events(stream)
    assert after == [("5", "milestone", {"stage": "done", "verdict": "ok"}),
                     (None, "end", {"status": "completed", "output": "ONE TWO (ok)", "failure": None})]
    async with await subscribe(cluster, invocation_id) as stream:
        milestones = [data["stage"] for i, kind, data in await read_events(stream) if kind == "milestone"]
    assert milestones == ["thinking", "review", "done"]
