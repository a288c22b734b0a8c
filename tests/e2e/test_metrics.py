"""`GET /metrics`: the operator's list (DESIGN §11), summed over the workers, named as Prometheus expects."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def _scrape(cluster: Cluster) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with cluster.http.get(f"http://{cluster.admin}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_metrics_an_operator_watches(cluster: Cluster) -> None:
    for key in ("m1", "m2", "m3", "m4", "m5", "m6"):  # spread over both workers' partitions
        assert (await cluster.post(f"/Counter/{key}/add", 1))[0] == 200
    assert (await cluster.post("/Nope/x", 1))[0] == 404
    assert (await cluster.post("/Steps/twenty", "metrics"))[0] == 200  # twenty steps
    assert (await cluster.post("/Waits/park/send", 120))[0] == 202  # a durable timer, then a suspension
    # A key held by a long attempt, and an invocation in line behind it.
    assert (await cluster.post("/Counter/line/hold/send", 60_000))[0] == 202
    assert (await cluster.post("/Counter/line/add/send", 1))[0] == 202

    async def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = await _scrape(cluster)
        ready = (_value(samples, "sidecar_suspensions_total") >= 1
                 and _value(samples, "sidecar_inbox_depth", service="Counter") == 1
                 and _value(samples, "sidecar_timers_pending") >= 1)
        return samples if ready else None

    samples = await eventually(settled, timeout=30, what="the suspension, the timer and the waiting invocation")
    assert _value(samples, "sidecar_http_responses_total", api="ingress", code="200") >= 6
    assert _value(samples, "sidecar_http_responses_total", api="ingress", code="404") == 1
    assert _value(samples, "sidecar_http_responses_total", api="ingress", code="202") >= 3
    assert _value(samples, "sidecar_http_responses_total", api="admin", code="200") >= 1
    assert _value(samples, "sidecar_inbox_oldest_age_seconds", service="Counter") > 0
    assert _value(samples, "sidecar_invocations_finished_total", status="completed") >= 6
    assert _value(samples, "sidecar_invocation_duration_seconds_count") >= 7
    assert _value(samples, "sidecar_step_duration_seconds_count", service="Steps") == 20
    assert _value(samples, "sidecar_step_duration_seconds_sum", service="Steps") > 0
    # Journal commits: latency and group size, from both workers.
    commits = _value(samples, "sidecar_commit_seconds_count")
    assert commits >= 6 and _value(samples, "sidecar_commit_seconds_sum") > 0
    assert _value(samples, "sidecar_group_commit_batches_count") == commits
    assert _value(samples, "sidecar_group_commit_batches_sum") >= commits
    assert _value(samples, "sidecar_committed_batches_total") >= _value(samples, "sidecar_group_commits_total") > 0
    # The store: its file, the pages in use, and the map writes may fill.
    file_bytes = _value(samples, "sidecar_store_file_bytes")
    assert 0 < _value(samples, "sidecar_store_used_bytes") <= file_bytes
    assert _value(samples, "sidecar_store_map_bytes") == 64 * 1024**3
    assert _value(samples, "sidecar_attempts_started_total") >= 8
    names = {name for name, _ in samples}
    assert {"sidecar_attempts_failed_total", "sidecar_running_attempts", "sidecar_active_invocations",
            "sidecar_waiting_callers", "sidecar_blobs", "sidecar_blob_bytes"} <= names
