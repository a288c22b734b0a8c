"""``?delay=`` on a send starts the invocation later, durably: a SIGKILLed sidecar still runs it."""

from __future__ import annotations

import time
from datetime import datetime

from tests.e2e.conftest import Cluster


async def test_delayed_send_waits_and_survives_a_sidecar_crash(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    sent_at = time.time()
    status, body, _ = await cluster.post("/Counter/later/add/send?delay=2s", 7)
    assert status == 202
    invocation_id = body["invocationId"]
    _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
    assert shown["status"] == "pending" and shown["reason"].startswith("delayed")
    # An exclusive call on the same key is not blocked by the delayed one.
    assert (await cluster.post("/Counter/later/add", 1))[:2] == (200, 1)

    cluster.sidecar.kill()
    await cluster.start_sidecar()
    status, result = await cluster.get(f"/restate/invocation/{invocation_id}/attach")
    assert (status, result) == (200, 8)
    _, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
    assert datetime.fromisoformat(shown["completed_at"]).timestamp() >= sent_at + 2.0


async def test_iso_delay_and_bad_delays(cluster: Cluster) -> None:
    status, body, _ = await cluster.post("/restate/send/Counter/iso/add?delay=PT0.2S", 1)
    assert status == 202
    assert await cluster.get(f"/restate/invocation/{body['invocationId']}/attach") == (200, 1)
    status, body, _ = await cluster.post("/Counter/iso/add/send?delay=soon", 1)
    assert status == 400 and "invalid duration" in body["message"]
    status, body, _ = await cluster.post("/Counter/iso/add?delay=1s", 1)
    assert status == 400 and "sends only" in body["message"]
