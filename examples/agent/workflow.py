"""The agent: 40 durable steps from a goal to an approved, invoiced, confirmed order.

Plan with an LLM, think and search in 16 rounds, summarize (its tokens streamed to the client),
write the CRM record in two halves, mail a receipt, invoice, wait for a human's approval (an
awakeable with a deadline), record the decision, mail a confirmation. Every step is journaled, so
a handler or sidecar killed at any moment resumes at the step it was in, and every vendor call
carries the step's idempotency key, so a step cut by a kill and run again does nothing twice.

The premium model is flaky and bills per call, failed calls too: each LLM step is retried a few
times within ``max_elapsed``, falls back to the cheap model after two transient failures (or at
once while the premium model's circuit breaker is open, shared by all runs), and counts what it
cost against the run's budget.

    .venv/bin/python -m examples.agent.vendors --port 9090 &
    .venv/bin/python -m handler_sdk examples.agent.workflow:agent --port 9083 &
    .venv/bin/sidecar register http://127.0.0.1:9083
    curl -s localhost:8080/Agent/order-1/run/send -H 'content-type: application/json' \\
        -d '{"customer": "alice", "email": "alice@example.com", "goal": "a team plan", "amount_cents": 4900}'
    curl -sN localhost:8080/restate/invocation/inv_.../events         # milestones and summary tokens
    curl -s -X POST localhost:8080/Agent/order-1/approval              # the awakeable to resolve
    curl -s localhost:8080/restate/awakeables/awk_.../resolve -H 'content-type: application/json' -d '"approved"'
    curl -s localhost:8080/restate/workflow/Agent/order-1/attach

``make demo-chaos`` runs it under SIGKILLs with the premium model in a long outage.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import aiohttp
import msgspec

from handler_sdk import (
    CircuitBreaker, Context, RetryPolicy, Workflow, WorkflowContext, WorkflowSharedContext, raise_for_status,
)

VENDORS = os.environ.get("VENDORS_URL", "http://127.0.0.1:9090")
RESEARCH_ROUNDS = 16
#: What a failed premium call is billed (the vendor charges for a half-generated reply).
FAILED_CALL_COST = 0.01

agent = Workflow("Agent")


class Task(msgspec.Struct):
    customer: str
    email: str
    goal: str
    amount_cents: int
    #: How long a human has to approve before the order is confirmed as "not approved".
    approval_deadline_s: float = 300.0


class Answer(msgspec.Struct):
    text: str
    model: str
    usage_usd: float


class Report(msgspec.Struct):
    decision: str
    invoice: str
    summary: str


_session: aiohttp.ClientSession | None = None


def _http() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    return _session


async def _post(ctx: Context, path: str, body: object, method: str = "POST") -> dict[str, object]:
    """One vendor call under the running step's idempotency key: a repeat changes nothing."""
    headers = {"idempotency-key": ctx.idempotency_key()}
    async with _http().request(method, f"{VENDORS}{path}", json=body, headers=headers) as response:
        raise_for_status(response, cost=FAILED_CALL_COST if path == "/llm/premium" else None)
        reply: dict[str, object] = await response.json()
        return reply


async def _ask(ctx: Context, model: str, prompt: str, stream: bool) -> Answer:
    answer = msgspec.convert(await _post(ctx, f"/llm/{model}", {"prompt": prompt}), Answer)
    if stream:  # the tokens reach the client as they come (ephemeral: never journaled)
        for token in answer.text.split():
            ctx.publish(token, ephemeral=True)
    return answer


async def premium(ctx: Context, prompt: str, stream: bool = False) -> Answer:
    return await _ask(ctx, "premium", prompt, stream)


async def cheap(ctx: Context, prompt: str, stream: bool = False) -> Answer:
    return await _ask(ctx, "cheap", prompt, stream)


#: Shared by every run and every handler process: five failures in a row and, for 5 s, LLM steps go
#: straight to the cheap model without calling (or paying) the premium one.
PREMIUM = CircuitBreaker("premium", failure_threshold=5, cool_down=5.0)

#: Patient with a flaky model, not with an outage: at most 6 tries within 30 s.
LLM_RETRY = RetryPolicy(max_attempts=6, initial_interval=0.2, max_interval=2.0, max_elapsed=30.0)


async def think(ctx: WorkflowContext, name: str, prompt: str, stream: bool = False) -> Answer:
    """One LLM step: the premium model, the cheap one after two transient failures of it, or at
    once while the premium model's breaker is open."""
    answer: Answer = await ctx.run(name, premium, ctx, prompt, stream, retry=LLM_RETRY,
                                   cost=lambda a: a.usage_usd, fallback=cheap, fallback_after=2, breaker=PREMIUM)
    return answer


@agent.main(budget=1.00)
async def run(ctx: WorkflowContext, task: Task) -> Report:
    ctx.publish({"stage": "planning", "goal": task.goal})
    plan = await think(ctx, "plan", f"plan how to sell {task.goal} to {task.customer}")
    notes: list[str] = []
    for i in range(RESEARCH_ROUNDS):
        thought = await think(ctx, f"think-{i}", f"round {i} of {plan.text}")
        found = await ctx.run(f"search-{i}", _post, ctx, "/search", {"query": thought.text[:60]})
        notes.append(str(found["results"]))
    ctx.publish({"stage": "summarizing"})
    summary = await think(ctx, "summarize", f"summarize {len(notes)} findings for {task.customer}", True)

    record = f"/crm/{task.customer}"
    await ctx.run("crm-contact", _post, ctx, record, {"name": task.customer, "email": task.email}, "PUT")
    await ctx.run("crm-deal", _post, ctx, record, {"amount_cents": task.amount_cents, "summary": summary.text}, "PUT")
    await ctx.run("email-received", _post, ctx, "/emails",
                  {"to": task.email, "subject": "We have your order", "kind": "received"})
    invoice = await ctx.run("invoice", _post, ctx, "/invoices",
                            {"customer": task.customer, "amount_cents": task.amount_cents})

    decision = await _approval(ctx, task.approval_deadline_s)
    await ctx.run("crm-decision", _post, ctx, record, {"decision": decision}, "PUT")
    await ctx.run("email-confirmed", _post, ctx, "/emails",
                  {"to": task.email, "subject": f"Your order: {decision}", "kind": "confirmed"})
    ctx.publish({"stage": "done", "decision": decision})
    return Report(decision=decision, invoice=str(invoice["id"]), summary=summary.text)


async def _approval(ctx: WorkflowContext, deadline_s: float) -> str:
    """A human's word, or "not approved in time" once the deadline passes (a durable timer).

    The awakeable settles the race: on the deadline the run resolves it itself, and the first
    resolution wins, so a replay takes the same path whichever await woke first."""
    awakeable_id, decided = ctx.awakeable(type=str)
    ctx.set("approval", awakeable_id)
    ctx.publish({"stage": "awaiting approval", "awakeable": awakeable_id})
    human = asyncio.ensure_future(decided)
    deadline = asyncio.ensure_future(ctx.sleep(timedelta(seconds=deadline_s)))
    await asyncio.wait([human, deadline], return_when=asyncio.FIRST_COMPLETED)
    deadline.cancel()
    ctx.resolve_awakeable(awakeable_id, "not approved in time")
    return await human


@agent.handler()
async def approval(ctx: WorkflowSharedContext) -> str | None:
    """The awakeable a human resolves to approve (null until the run waits for one)."""
    return await ctx.get("approval", type=str)
