"""What steps cost, summed by the sidecar over real invocations: per service, handler, key, step
and time; in an invocation's detail, the CLI and the metrics; exact across SIGKILLs."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def _costs(cluster: Cluster, **query: str) -> Any:
    async with cluster.http.get(f"http://{cluster.admin}/costs", params=query) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _call(cluster: Cluster, path: str, body: Any) -> str:
    status, output, headers = await cluster.post(path, body)
    assert status == 200, output
    return headers["x-restate-id"]


async def test_costs_are_summed_per_service_handler_key_step_and_time(costly: Cluster) -> None:
    alice = await _call(costly, "/Agents/alice/work", {"llm": 1.5, "search": 0.25})
    await _call(costly, "/Agents/alice/work", {"llm": 0.5})
    await _call(costly, "/Agents/bob/work", {"llm": 2.0})
    since = int(time.time() * 1000) + 1

    async def later() -> bool:  # what follows is recorded at `since` or after it
        return time.time() * 1000 > since
    await eventually(later, what="the clock to pass the cut")
    await _call(costly, "/Agents/bob/review", {"llm": 0.125, "check": 1.0})
    await _call(costly, "/Tools/quote", 0.75)

    assert await _costs(costly) == {"total": 6.125, "invocations": 5,
                                    "by_step": {"check": 1.0, "llm": 4.875, "search": 0.25}}
    assert await _costs(costly, service="Agents") == {"total": 5.375, "invocations": 4,
                                                      "by_step": {"check": 1.0, "llm": 4.125, "search": 0.25}}
    assert await _costs(costly, service="Agents", key="alice") == {"total": 2.25, "invocations": 2,
                                                                   "by_step": {"llm": 2.0, "search": 0.25}}
    assert (await _costs(costly, service="Agents", handler="review"))["total"] == 1.125
    assert (await _costs(costly, service="Agents", key="bob", handler="work"))["total"] == 2.0
    assert await _costs(costly, step="llm") == {"total": 4.875, "invocations": 5, "by_step": {"llm": 4.875}}
    assert await _costs(costly, service="Tools", handler="quote") == {"total": 0.75, "invocations": 1,
                                                                      "by_step": {"llm": 0.75}}
    assert await _costs(costly, since=str(since)) == {"total": 1.875, "invocations": 2,
                                                      "by_step": {"check": 1.0, "llm": 0.875}}
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since // 1000)) + f".{since % 1000:03}Z"
    assert (await _costs(costly, since=iso))["total"] == 1.875
    assert await _costs(costly, service="Nobody") == {"total": 0.0, "invocations": 0, "by_step": {}}

    _, shown = await costly.get(f"/invocations/{alice}", admin=True)
    assert shown["cost"] == 1.75
    runs = [(e["name"], e["cost"], e["attempts"], e["variant"]) for e in shown["journal"] if e["kind"] == "Run"]
    assert runs == [("llm", 1.5, 1, "primary"), ("search", 0.25, 1, "primary")]
    assert "cost" not in next(e for e in shown["journal"] if e["kind"] == "Input")

    printed = await costly.cli("costs", "Agents/alice")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == ["total: 2.25 over 2 invocations", "STEP    COST", "llm     2.0",
                                           "search  0.25"]
    as_json = await costly.cli("costs", "Tools/quote", "--step", "llm", "--json")
    assert json.loads(as_json.stdout) == {"total": 0.75, "invocations": 1, "by_step": {"llm": 0.75}}

    async with costly.http.get(f"http://{costly.admin}/metrics") as response:
        metrics = await response.text()
    counted = {tuple(m.groups()[:3]): float(m.group(4)) for m in re.finditer(
        r'^sidecar_cost_total\{handler="([^"]*)",service="([^"]*)",step="([^"]*)"\} (\S+)$', metrics, re.MULTILINE)}
    assert counted == {("work", "Agents", "llm"): 4.0, ("work", "Agents", "search"): 0.25,
                       ("review", "Agents", "llm"): 0.125, ("review", "Agents", "check"): 1.0,
                       ("quote", "Tools", "llm"): 0.75}

    assert (await costly.admin_call("DELETE", f"/invocations/{alice}"))[0] == 200  # a purge takes its costs along
    assert (await _costs(costly, service="Agents", key="alice"))["total"] == 0.5


async def test_a_bad_cost_query_is_a_400_with_its_reason(costly: Cluster) -> None:
    for query, message in [
        ("key=alice", "key needs service"),
        ("service=Agents&since=yesterday", "since must be an ISO 8601 time"),
        ("service=Agents&servce=Agents", "unknown parameter 'servce'"),
        ("service=Agents&service=Tools", "service given more than once"),
    ]:
        async with costly.http.get(f"http://{costly.admin}/costs?{query}") as response:
            assert response.status == 400 and response.content_type == "application/json", query
            body = await response.json()
        assert body["code"] == 400 and message in body["message"], body


async def test_costs_stay_exact_when_the_handlers_or_the_sidecar_are_killed_mid_step(costly: Cluster) -> None:
    """The first step is durable when the second one's first try hangs; a SIGKILL there, and the
    retry replays the first (not journaled again, not counted again) and runs the second."""

    async def hung_on_gate(name: str) -> bool:
        async with costly.http.get(f"{costly.sink_url}/stats") as response:
            return (await response.json())["counters"].get(f"gate-{name}") == 1

    for name, victim in [("h", "handlers"), ("s", "sidecar")]:
        status, sent, _ = await costly.post(f"/Agents/{name}/gated/send", name)
        assert status == 202
        await eventually(lambda: hung_on_gate(name), what=f"{name}'s second step to hang")
        if victim == "handlers":
            costly.handlers.kill()
            await costly.restart_handlers()
        else:
            costly.sidecar.kill()
            await costly.start_sidecar()
        attached = await costly.get(f"/restate/invocation/{sent['invocationId']}/attach")
        assert attached == (200, "through")
        assert await _costs(costly, service="Agents", key=name) == {
            "total": 0.75, "invocations": 1, "by_step": {"gate": 0.5, "plan": 0.25}}
        _, shown = await costly.get(f"/invocations/{sent['invocationId']}", admin=True)
        assert [(e["name"], e["cost"]) for e in shown["journal"] if e["kind"] == "Run"] == [
            ("plan", 0.25), ("gate", 0.5)]
        assert shown["cost"] == 0.75
    async with costly.http.get(f"{costly.sink_url}/stats") as response:
        tries = (await response.json())["counters"]
    assert (tries["gate-h"], tries["gate-s"]) == (2, 2)  # the step cut by each kill ran again; its cost once
    assert (await _costs(costly))["total"] == 1.5
