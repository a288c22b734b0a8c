"""Durable waits end to end: timers and awakeables survive SIGKILL; suspended invocations cost
the handler service nothing."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import lmdb

from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def _stats(cluster: Cluster) -> dict:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return await response.json()


async def _note(cluster: Cluster, name: str) -> str:
    async with cluster.http.get(f"{cluster.sink_url}/notes/{name}") as response:
        return await response.json() if response.status == 200 else ""


async def test_a_timer_fires_once_not_early_across_crashes(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    sent = time.monotonic()
    _, body, _ = await cluster.post("/Waits/nap/send", "t1")
    invocation_id = body["invocationId"]

    async def sleeping() -> bool:
        _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
        return any(e["kind"] == "Sleep" for e in shown["journal"])

    await eventually(sleeping, what="the timer to be journaled")
    cluster.sidecar.kill()
    cluster.handlers.kill()
    await cluster.restart_handlers()
    await cluster.start_sidecar()
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, "rested")
    assert time.monotonic() - sent >= 2.0
    assert (await _stats(cluster))["counters"]["wake-t1"] == 1


async def test_a_thousand_parked_invocations_hold_no_handler_attempts(cluster: Cluster) -> None:
    sent = await asyncio.gather(*(cluster.post("/Waits/park/send", 120) for _ in range(1000)))
    ids = [body["invocationId"] for _, body, _ in sent]

    async def all_suspended() -> bool:
        _, listed = await cluster.get("/invocations?status=suspended&service=Waits&limit=1000", admin=True)
        return len(listed["invocations"]) == len(ids)

    await eventually(all_suspended, timeout=90, what="every parked invocation to suspend")

    async def gauges() -> dict[str, float]:
        async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
            lines = (await response.text()).splitlines()
        values = {l.split()[0]: float(l.split()[1]) for l in lines if l.startswith("sidecar_") and " " in l}
        parked = values.get("sidecar_active_invocations", 0) >= len(ids)
        return values if parked and values.get("sidecar_running_attempts") == 0 else {}

    # The gauges (summed over both workers) are sampled once a second: wait for a sample taken
    # after the suspensions, in which every parked invocation holds no attempt.
    await eventually(gauges, what="no running attempts while the invocations are parked")
    _, shown = await cluster.get(f"/invocations/{ids[0]}", admin=True)
    assert shown["reason"].startswith("suspended, waiting on journal entry")
    assert (await cluster.admin_call("POST", f"/invocations/{ids[0]}/kill"))[0] == 202


async def test_awakeables_resolved_over_http_before_or_after_the_await(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    _, body, _ = await cluster.post("/Waits/approval/send", "a1")
    awakeable_id = await eventually(lambda: _note(cluster, "a1"), what="the awakeable ID")
    assert awakeable_id.startswith("awk_inv_")
    status, _, _ = await cluster.post(f"/restate/awakeables/{awakeable_id}/resolve", "yes")
    assert status == 202  # likely before the handler awaits: kept, not lost
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, "approved: yes")
    status, error, _ = await cluster.post(f"/restate/awakeables/{awakeable_id}/resolve", "again")
    assert status in (404, 409), error  # finished (404) or already completed (409): never twice

    _, body, _ = await cluster.post("/Waits/approval/send", "a2")
    awakeable_id = await eventually(lambda: _note(cluster, "a2"), what="the second awakeable ID")
    cluster.sidecar.kill()  # a resolution sent while the sidecar is down is retried by the client
    await cluster.start_sidecar()
    async with cluster.http.post(f"http://{cluster.ingress}/restate/awakeables/{awakeable_id}/reject",
                                 data=b"not today") as response:
        assert response.status == 202
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, "rejected: not today")


async def test_a_handler_resolves_another_handler_s_awakeable(cluster: Cluster) -> None:
    _, body, _ = await cluster.post("/Waits/approval/send", "a3")
    awakeable_id = await eventually(lambda: _note(cluster, "a3"), what="the awakeable ID")
    assert (await cluster.post("/Waits/approve_for", awakeable_id))[0] == 200
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (
        200, "approved: by another handler")


async def test_unknown_or_forged_awakeables_are_404(cluster: Cluster) -> None:
    for forged in ("awk_nope", "awk_inv_0000000000000000000000000_1_secret"):
        status, body, _ = await cluster.post(f"/restate/awakeables/{forged}/resolve", 1)
        assert status == 404, body
    _, body, _ = await cluster.post("/Waits/approval/send", "a4")
    real = await eventually(lambda: _note(cluster, "a4"), what="the awakeable ID")
    status, _, _ = await cluster.post(f"/restate/awakeables/{real[:-4]}XXXX/resolve", 1)
    assert status == 404
    status, _, _ = await cluster.post(f"/restate/awakeables/{real}/resolve", raw=b"{not json")
    assert status == 400
    await asyncio.gather(cluster.post(f"/restate/awakeables/{real}/resolve", "ok"))
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, "approved: ok")


async def test_a_resolution_reaches_a_waiter_whose_handler_service_was_killed(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    _, body, _ = await cluster.post("/Waits/approval/send", "a5")
    awakeable_id = await eventually(lambda: _note(cluster, "a5"), what="the awakeable ID")
    cluster.handlers.kill()  # the waiting attempt dies with it
    assert (await cluster.post(f"/restate/awakeables/{awakeable_id}/resolve", "late"))[0] == 202
    await cluster.restart_handlers()
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, "approved: late")


def _early_resolutions(data_dir: Path) -> int:
    """The resolutions kept for awakeables not journaled yet, counted in LMDB itself."""
    env = lmdb.open(str(data_dir), max_dbs=20, readonly=True, lock=False)
    try:
        with env.begin(db=env.open_db(b"completions", create=False)) as txn:
            return txn.stat()["entries"]
    finally:
        env.close()


async def test_forged_awakeable_ids_of_a_live_invocation_are_404_and_nothing_is_stored(cluster: Cluster) -> None:
    """Over HTTP and from a handler, across two workers; then the real ID still works."""
    _, body, _ = await cluster.post("/Waits/approval/send", "forge")
    real = await eventually(lambda: _note(cluster, "forge"), what="the awakeable ID")
    invocation_id = body["invocationId"]
    assert real.startswith(f"awk_{invocation_id}_1_")
    answers = await asyncio.gather(*(
        cluster.post(f"/restate/awakeables/awk_{invocation_id}_{100 + n}_{secrets.token_urlsafe(16)}/resolve", n)
        for n in range(200)))  # indexes past its journal: an early resolution, if they were real
    assert [status for status, _, _ in answers] == [404] * 200, answers[0]
    tag = real[len(f"awk_{invocation_id}_1_"):]
    for forged in (f"awk_{invocation_id}_4294967296_{tag}", f"awk_{invocation_id}_{10**30}_{tag}",
                   f"awk_{invocation_id}_2_{tag}", f"awk_{invocation_id}_01_{tag}"):
        status, error, _ = await cluster.post(f"/restate/awakeables/{forged}/resolve", 1)
        assert (status, error["code"]) == (404, 404) and "no such awakeable" in error["message"]
    # A handler's resolutions go through the same check: the forged ones first, then the real one.
    forged_by_handler = [f"awk_{invocation_id}_{300 + n}_{secrets.token_urlsafe(16)}" for n in range(20)]
    assert (await cluster.post("/Waits/resolve_all", [*forged_by_handler, real]))[0] == 200
    assert await cluster.get(f"/restate/invocation/{invocation_id}/attach") == (200, "approved: by a handler, at last")
    cluster.sidecar.stop()
    assert _early_resolutions(cluster.data_dir) == 0


async def test_a_real_awakeable_resolved_before_its_entry_is_journaled_completes(cluster: Cluster) -> None:
    assert (await cluster.post("/Waits/resolve_own_early", cluster.ingress))[:2] == (200, "202: early")
