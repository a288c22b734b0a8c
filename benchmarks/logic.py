"""The handler logic both systems run, so that the comparison measures the plumbing, not the work.

The baseline (``baseline_handlers``) calls these functions directly; the sidecar scenarios
(``scenarios``) wrap each one in ``ctx.run``. The steps are async so that neither side pays a
thread hop for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


async def step_one(n: int) -> int:
    return n + 1


async def step_two(x: int) -> int:
    return x * 2


async def step_three(x: int) -> int:
    return x - 3


#: Steps.run's three sequential steps, by the name the sidecar journals each under.
STEPS: tuple[tuple[str, Callable[[int], Awaitable[int]]], ...] = (
    ("one", step_one),
    ("two", step_two),
    ("three", step_three),
)


async def apply_steps(n: int) -> int:
    """What Steps.run returns for ``n`` (used by the baseline and to check responses)."""
    x = n
    for _, fn in STEPS:
        x = await fn(x)
    return x
