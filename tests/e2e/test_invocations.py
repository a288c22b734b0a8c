"""End to end through real processes: calls, sends, attach/output, idempotency, retries, errors."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def test_counter_calls_accumulate_state_per_key(cluster: Cluster) -> None:
    assert (await cluster.post("/Counter/alice/add", 5))[:2] == (200, 5)
    status, body, headers = await cluster.post("/Counter/alice/add", 2)
    assert (status, body) == (200, 7)
    assert headers["x-restate-id"].startswith("inv_")
    assert (await cluster.post("/Counter/bob/add", 1))[:2] == (200, 1)
    assert (await cluster.post("/restate/call/Counter/alice/get"))[:2] == (200, 7)
    assert await cluster.get("/state/Counter/alice", admin=True) == (200, {"state": {"count": 7}})


async def test_send_returns_at_once_and_attach_and_output_give_the_result(cluster: Cluster) -> None:
    status, body, headers = await cluster.post("/Counter/carol/add/send", 3)
    assert status == 202 and body["status"] == "Accepted"
    invocation_id = body["invocationId"]
    assert headers["x-restate-id"] == invocation_id
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, 3)
    assert await cluster.get(f"/restate/invocation/{invocation_id}/output") == (200, 3)
    status, body, _ = await cluster.post("/restate/send/Counter/carol/add", 4)
    assert status == 202
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, 7)


async def test_output_of_an_unfinished_invocation_is_470(cluster: Cluster) -> None:
    _, body, _ = await cluster.post("/Counter/dora/hold/send", 1500)
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/output") == (470, {"code": 470, "message": "not ready"})
    assert (await cluster.get(f"/restate/invocation/{body['invocationId']}/attach"))[0] == 200


async def test_exclusive_handlers_never_overlap_on_a_key_but_keys_run_in_parallel(cluster: Cluster) -> None:
    calls = [cluster.post(f"/Counter/{key}/hold", 150) for key in ("k1", "k2", "k3") for _ in range(4)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*calls)
    elapsed = loop.time() - started
    assert all(status == 200 for status, _, _ in results)
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        stats = await response.json()
    assert stats["overlaps"] == []
    # 4 calls of 150 ms per key run one after another; the 3 keys run side by side.
    assert elapsed < 12 * 0.150


async def test_exclusive_calls_on_one_key_run_in_arrival_order(cluster: Cluster) -> None:
    ids = []
    for n in range(1, 6):
        _, body, _ = await cluster.post("/Counter/ordered/add/send", n)
        ids.append(body["invocationId"])
    totals = [(await cluster.get(f"/restate/invocation/{i}/attach"))[1] for i in ids]
    assert totals == [1, 3, 6, 10, 15]


async def test_idempotency_key_runs_once_and_repeats_get_the_same_result(cluster: Cluster) -> None:
    headers = {"idempotency-key": "order-42"}
    results = await asyncio.gather(*(cluster.post("/Counter/idem/add", 10, headers=headers) for _ in range(5)))
    assert {(status, body) for status, body, _ in results} == {(200, 10)}
    assert len({h["x-restate-id"] for _, _, h in results}) == 1
    assert all("idempotency-expires" in h for _, _, h in results)
    status, body, _ = await cluster.post("/Counter/idem/add", 10, headers=headers)
    assert (status, body) == (200, 10)
    assert (await cluster.post("/Counter/idem/get"))[:2] == (200, 10)
    status, body, _ = await cluster.post("/Counter/idem/add/send", 10, headers=headers)
    assert status == 202 and body["status"] == "PreviouslyAccepted"
    assert await cluster.get("/restate/invocation/Counter/idem/add/order-42/output") == (200, 10)


async def test_step_retries_then_success_is_journaled_once(cluster: Cluster) -> None:
    assert (await cluster.post("/Steps/flaky_step", "f1"))[:2] == (200, 3)
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        assert (await response.json())["counters"]["f1"] == 3


async def test_exhausted_step_retries_end_in_the_handlers_terminal_error(cluster: Cluster) -> None:
    status, body, headers = await cluster.post("/Steps/hopeless_step", "h1")
    assert status == 502 and "gave up" in body["message"] and "vendor is down" in body["message"]
    _, shown = await cluster.get(f"/invocations/{headers['x-restate-id']}", admin=True)
    assert shown["status"] == "failed"
    run_entries = [e for e in shown["journal"] if e["kind"] == "Run"]
    assert len(run_entries) == 1 and run_entries[0]["failure"]["terminal"] is True


async def test_terminal_error_code_and_message_reach_the_client(cluster: Cluster) -> None:
    status, body, _ = await cluster.post("/Steps/refuse", "no stock")
    assert (status, body) == (422, {"code": 422, "message": "refused: no stock"})


async def test_crashing_handler_is_retried_then_paused_with_its_reason(cluster: Cluster) -> None:
    status, body, _ = await cluster.post("/Steps/crashy/send", "c1")
    invocation_id = body["invocationId"]

    async def paused() -> dict:
        _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
        return shown if shown["status"] == "paused" else {}

    shown = await eventually(paused, what="the invocation to pause")
    assert shown["attempts"] == 3
    assert "bug in handler code" in shown["last_error"] and "paused after 3 attempts" in shown["reason"]
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        assert (await response.json())["counters"]["c1"] == 3
    assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/kill"))[0] == 202
    assert (await cluster.get(f"/restate/invocation/{invocation_id}/attach"))[0] == 409


async def test_kill_frees_the_key_for_the_next_invocation(cluster: Cluster) -> None:
    _, first, _ = await cluster.post("/Counter/stuck/hold/send", 60_000)
    _, second, _ = await cluster.post("/Counter/stuck/add/send", 1)

    async def running() -> bool:
        _, shown = await cluster.get(f"/invocations/{first['invocationId']}", admin=True)
        return shown["status"] == "running"

    await eventually(running, what="the first invocation to run")
    _, queued = await cluster.get(f"/invocations/{second['invocationId']}", admin=True)
    assert queued["status"] == "pending" and "queued behind 1" in queued["reason"]
    assert await cluster.admin_call("POST", f"/invocations/{first['invocationId']}/kill") == (
        202, {"id": first["invocationId"], "status": "killed"})
    assert await cluster.get(f"/restate/invocation/{second['invocationId']}/attach") == (200, 1)
    assert (await cluster.admin_call("POST", f"/invocations/{first['invocationId']}/kill"))[0] == 409


async def test_admin_lists_shows_and_purges_invocations(cluster: Cluster) -> None:
    _, _, headers = await cluster.post("/Counter/eve/add", 1)
    invocation_id = headers["x-restate-id"]
    status, listed = await cluster.get("/invocations?service=Counter&key=eve", admin=True)
    assert status == 200 and [i["id"] for i in listed["invocations"]] == [invocation_id]
    _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
    assert shown["status"] == "completed" and shown["output"] == 1 and shown["input"] == 1
    assert [e["kind"] for e in shown["journal"]] == ["Input", "GetState", "Run", "SetState", "Output"]
    assert (await cluster.admin_call("DELETE", f"/invocations/{invocation_id}"))[0] == 200
    assert (await cluster.get(f"/invocations/{invocation_id}", admin=True))[0] == 404
    assert (await cluster.get("/invocations?status=bogus", admin=True))[0] == 400


async def test_the_list_shows_what_every_worker_is_running(cluster: Cluster) -> None:
    """Two workers, one admin endpoint: an invocation that the other worker runs is listed as
    running too, not with the status the store last had for it."""
    ids = []
    for n in range(8):  # eight keys: both workers own some of them
        status, body, _ = await cluster.post(f"/Counter/listed-{n}/hold/send", 60_000)
        assert status == 202
        ids.append(body["invocationId"])

    async def all_running() -> bool:
        for invocation_id in ids:
            _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
            if shown["status"] != "running":
                return False
        return True

    await eventually(all_running, what="every hold to run")
    _, listed = await cluster.get("/invocations?status=running&service=Counter&limit=1000", admin=True)
    assert sorted(i["id"] for i in listed["invocations"]) == sorted(ids)
    for invocation_id in ids:
        assert (await cluster.admin_call("POST", f"/invocations/{invocation_id}/kill"))[0] == 202


async def test_admin_state_edits_are_seen_by_handlers(cluster: Cluster) -> None:
    assert (await cluster.admin_call("PUT", "/state/Counter/frank/count", 41))[0] == 200
    assert (await cluster.post("/Counter/frank/add", 1))[:2] == (200, 42)
    assert (await cluster.admin_call("DELETE", "/state/Counter/frank/count"))[0] == 200
    assert (await cluster.post("/Counter/frank/get"))[:2] == (200, 0)
    assert (await cluster.admin_call("GET", "/state/Steps/x"))[0] == 404


async def test_metrics_count_every_worker_s_invocations(cluster: Cluster) -> None:
    for key in ("m1", "m2", "m3", "m4", "m5", "m6"):  # spread over both workers' partitions
        assert (await cluster.post(f"/Counter/{key}/add", 1))[0] == 200

    async def scraped() -> str:
        async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            text = await response.text()
        line = next(l for l in text.splitlines() if l.startswith('sidecar_invocations_finished_total{status="completed"}'))
        return text if float(line.split()[-1]) >= 6 else ""

    text = await eventually(scraped, what="the metrics to count all six invocations")
    assert "sidecar_invocation_duration_seconds_bucket" in text
    assert "sidecar_group_commits_total" in text and "sidecar_committed_batches_total" in text
