"""Definitions that the type-checked client code below calls: one of each kind."""

from __future__ import annotations

import msgspec

from handler_sdk import (
    Context, ObjectContext, ObjectSharedContext, Service, VirtualObject, Workflow, WorkflowContext,
    WorkflowSharedContext,
)

steps = Service("Steps")
counter = VirtualObject("Counter")
signup = Workflow("Signup")


class Order(msgspec.Struct):
    item: str
    quantity: int


@steps.handler()
async def typed(ctx: Context, order: Order) -> str:
    return f"{order.quantity} x {order.item}"


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    return n


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return 0


@signup.main()
async def run(ctx: WorkflowContext, email: str) -> str:
    return email


@signup.handler()
async def approve(ctx: WorkflowSharedContext, decision: str) -> str:
    return decision
