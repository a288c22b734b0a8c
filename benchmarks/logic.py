"""The handler logic both systems run, so that the comparison measures the plumbing, not the work.

The baseline (``baseline_handlers``) calls these functions directly; the sidecar scenarios
(``scenarios``) wrap each one in ``ctx.run``. The steps are async so that neither side pays a
thread hop for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable


def audit(key: str, n: int) -> str:
    """The baseline's copy of ``examples.counter.audit`` (Counter.add's one side effect).

    The sidecar side reuses ``examples.counter`` unchanged, whose ``audit`` is a *sync* function
    that prints a line: the SDK runs it off the event loop. The baseline does the same work the
    same way (a thread hop and a line on stdout), so that Counter.add compares like with like.
    """
    line = f"Counter[{key}] += {n}"
    print(line, flush=True)
    return line


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
