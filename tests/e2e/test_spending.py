"""Spending guarded by the runtime, against a paid vendor that counts every call (tests/e2e/sink.py):
budgets that stop at the limit across a handler SIGKILL, a pause resumed with a raised budget,
retries that honour Retry-After and max_elapsed, and a fallback that replays as it first ran."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Cluster
from tests.procs import eventually


async def _vendor_calls(cluster: Cluster) -> dict[str, int]:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        counters: dict[str, int] = (await response.json())["counters"]
        return counters


async def _detail(cluster: Cluster, invocation_id: str) -> Any:
    status, shown = await cluster.get(f"/invocations/{invocation_id}", admin=True)
    assert status == 200, shown
    return shown


async def _hung_at(cluster: Cluster, gate: str) -> bool:
    return (await _vendor_calls(cluster)).get(gate) == 1


async def test_a_budget_stops_spending_at_the_vendor_across_a_handler_kill(costly: Cluster) -> None:
    status, sent, _ = await costly.post("/Agents/alice/spend/send", 10)
    assert status == 202, sent
    await eventually(lambda: _hung_at(costly, "gate-spend-alice"), what="the third step's gate to hang")
    costly.handlers.kill()
    await costly.restart_handlers()
    attached = await costly.get(f"/restate/invocation/{sent['invocationId']}/attach")
    assert attached == (200, "stopped after 4: budget exceeded: spent 2 of 2")
    assert (await _vendor_calls(costly))["paid-alice"] == 4  # 4 x 0.5: the vendor billed the budget, no more
    shown = await _detail(costly, sent["invocationId"])
    assert shown["cost"] == 2.0
    refused = [e for e in shown["journal"] if e["kind"] == "Run" and e.get("failure")]
    assert [(e["name"], e["failure"]["code"], e["attempts"]) for e in refused] == [("llm", 402, 0)]

    # A caller's x-budget wins over the handler's budget=.
    status, output, _ = await costly.post("/Agents/bob/spend", 10, headers={"x-budget": "1"})
    assert (status, output) == (200, "stopped after 2: budget exceeded: spent 1 of 1")
    assert (await _vendor_calls(costly))["paid-bob"] == 2


async def test_a_paused_invocation_goes_on_when_resumed_with_a_higher_budget(costly: Cluster) -> None:
    status, sent, _ = await costly.post("/Agents/carol/careful/send", 4)
    assert status == 202
    invocation_id = sent["invocationId"]

    async def paused() -> bool:
        return (await _detail(costly, invocation_id))["status"] == "paused"

    await eventually(paused, what="the invocation to pause at its budget")
    shown = await _detail(costly, invocation_id)
    assert shown["reason"] == "budget exceeded: spent 1 of 1" and shown["cost"] == 1.0
    assert (await _vendor_calls(costly))["careful-carol"] == 2
    assert (await costly.admin_call("POST", f"/invocations/{invocation_id}/resume", {"budget": -1}))[0] == 400
    assert (await costly.admin_call("POST", f"/invocations/{invocation_id}/resume", {"budget": 3}))[0] == 202
    assert await costly.get(f"/restate/invocation/{invocation_id}/attach") == (200, "all 4 done")
    assert (await _vendor_calls(costly))["careful-carol"] == 4
    assert (await _detail(costly, invocation_id))["budget"] == 3


async def test_a_fallback_answers_during_an_outage_and_replays_as_it_ran(costly: Cluster) -> None:
    status, sent, _ = await costly.post("/Agents/dave/plan/send")
    assert status == 202
    await eventually(lambda: _hung_at(costly, "gate-plan-dave"), what="the step after the plan to hang")
    costly.handlers.kill()
    await costly.restart_handlers()
    assert await costly.get(f"/restate/invocation/{sent['invocationId']}/attach") == (200, "cheap-dave answer")
    calls = await _vendor_calls(costly)
    assert (calls["premium-dave"], calls["cheap-dave"]) == (2, 1)  # the replay called neither again
    [plan] = [e for e in (await _detail(costly, sent["invocationId"]))["journal"] if e.get("name") == "plan"]
    assert (plan["variant"], plan["attempts"], plan["cost"]) == ("fallback", 3, 0.22)  # 2 x 0.1 billed + 0.02


async def test_retries_follow_the_vendors_answers(costly: Cluster) -> None:
    # Retry-After: 1 after a 429, under a policy whose own backoff is an hour.
    assert (await costly.post("/Agents/erin/polite"))[:2] == (200, "polite-erin answer")
    assert (await _vendor_calls(costly))["polite-erin"] == 2
    # A vendor down for good: max_elapsed (0.5 s) ends the retries.
    status, output, _ = await costly.post("/Agents/erin/patient")
    assert status == 200 and "gave up after" in output and "max_elapsed 0.5 s" in output and "502" in output
    assert (await _vendor_calls(costly))["down-erin"] >= 2  # retried until the deadline, then no more
    # A 401 is not retried: the step fails with the vendor's status as its code.
    assert (await costly.post("/Agents/erin/unauthorized"))[:2] == (200, "401")
    assert (await _vendor_calls(costly))["auth-erin"] == 1
