"""Approval: draft something, wait for a human's decision with a deadline, then act or escalate.

Its progress streams to subscribers: milestones as it reaches them, the draft as it is written.

The workflow runs once per key. Its wait costs nothing while it lasts (the handler suspends),
and it survives restarts of everything: the decision, or the deadline, wakes it up.

    .venv/bin/python -m handler_sdk examples.approval:approval --port 9082
    .venv/bin/sidecar register http://127.0.0.1:9082
    curl -s localhost:8080/Approval/post-7/run/send -H 'content-type: application/json' \\
        -d '{"topic": "launch day", "deadline_s": 300}'          # {"invocationId": "inv_...", ...}
    curl -sN localhost:8080/restate/invocation/inv_.../events    # milestones and draft tokens, live
    curl -s -X POST localhost:8080/Approval/post-7/draft
    curl -s localhost:8080/Approval/post-7/decide -H 'content-type: application/json' -d '"approved"'
    curl -s localhost:8080/restate/workflow/Approval/post-7/attach
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import msgspec

from handler_sdk import TerminalError, Workflow, WorkflowContext, WorkflowSharedContext, serve

approval = Workflow("Approval")


class Request(msgspec.Struct):
    topic: str
    #: How long a human has to decide before the request is escalated.
    deadline_s: float = 3600.0


async def write_draft(ctx: WorkflowContext, topic: str) -> str:
    # Stands in for an LLM call: slow, costly, not repeatable. Journaled, so it runs once; its
    # tokens stream to whoever follows the run's events as they come.
    words = f"Announcing {topic}: it is finally here.".split()
    for word in words:
        ctx.publish(word, ephemeral=True)
    return " ".join(words)


async def publish(draft: str) -> str:
    return f"published: {draft}"


async def escalate(draft: str, why: str) -> str:
    return f"escalated to the on-call editor ({why})"


@approval.main()
async def run(ctx: WorkflowContext, request: Request) -> str:
    ctx.publish({"stage": "drafting"})
    draft = await ctx.run("draft", write_draft, ctx, request.topic)
    ctx.set("draft", draft)
    ctx.publish({"stage": "awaiting a decision", "draft": draft})
    # A human's decision or the deadline (a durable timer), whichever comes first. The timer is
    # this run's own: it ends with the run, so nothing is left waiting once it is decided.
    human = asyncio.ensure_future(ctx.promise("decision", type=str).value())
    deadline = asyncio.ensure_future(ctx.sleep(timedelta(seconds=request.deadline_s)))
    await asyncio.wait([human, deadline], return_when=asyncio.FIRST_COMPLETED)
    deadline.cancel()
    # The promise settles the race, not which await woke first: "timed out" counts only if nobody
    # decided before it (the first resolution wins), so a replay takes the same path.
    try:
        await ctx.promise("decision").resolve("timed out")
    except TerminalError:
        pass  # a human decided in time
    decision = await human
    ctx.set("decision", decision)
    ctx.publish({"stage": "decided", "decision": decision})
    if decision == "approved":
        return await ctx.run("publish", publish, draft)
    return await ctx.run("escalate", escalate, draft, decision)


@approval.handler()
async def decide(ctx: WorkflowSharedContext, decision: str) -> str:
    """A human's decision: "approved", or anything else to escalate."""
    await ctx.promise("decision").resolve(decision)
    return f"recorded: {decision}"


@approval.handler()
async def draft(ctx: WorkflowSharedContext) -> str | None:
    """The draft awaiting a decision (null until it is written)."""
    return await ctx.get("draft", type=str)


if __name__ == "__main__":
    serve([approval], port=9082)
