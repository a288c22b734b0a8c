"""The prober of an unreachable deployment: knocks with its own backoff, wakes every waiter once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from sidecar.invoker.reachability import PROBE_MAX_S, Prober
from sidecar.transport.links import LinkError


class FlakyDeployment:
    """Refuses the first ``refusals`` connections, then accepts; remembers when it was knocked on."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.knocks: list[float] = []

    async def connect(self) -> object:
        self.knocks.append(asyncio.get_running_loop().time())
        if len(self.knocks) <= self.refusals:
            raise LinkError(f"refused #{len(self.knocks)}")
        return object()


def _prober(deployment: FlakyDeployment, tasks: list[asyncio.Task[None]]) -> Prober:
    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.ensure_future(coro))

    return Prober("dp_x", deployment.connect, spawn)


async def test_every_waiter_wakes_once_at_the_first_successful_connection() -> None:
    deployment, tasks = FlakyDeployment(refusals=3), []
    prober = _prober(deployment, tasks)
    woken: list[int] = []
    for n in range(5):
        prober.wait(lambda n=n: woken.append(n), "cannot connect" if n == 0 else None)
    assert prober.down and len(tasks) == 1, "one prober, not one knock per waiter"
    assert prober.reason().startswith("deployment dp_x unreachable since 20") and "Z: cannot connect" in prober.reason()
    await asyncio.wait_for(tasks[0], 5)
    assert sorted(woken) == [0, 1, 2, 3, 4]
    assert len(deployment.knocks) == 4 and not prober.down and not prober.waiting
    gaps = [b - a for a, b in zip(deployment.knocks, deployment.knocks[1:])]
    assert gaps == sorted(gaps) and max(gaps) <= PROBE_MAX_S + 0.1, "backoff grows, capped"


async def test_a_cancelled_waiter_is_not_woken_and_an_empty_wait_stops_probing() -> None:
    deployment, tasks = FlakyDeployment(refusals=1_000_000), []
    prober = _prober(deployment, tasks)
    woken: list[str] = []
    prober.wait(lambda: woken.append("a"), "down").cancel()
    await asyncio.wait_for(tasks[0], 5)
    assert woken == [] and not prober.down, "nobody waits: the prober stops and forgets the outage"
    deployment.refusals = 0
    prober.wait(lambda: woken.append("b"), "down again")
    await asyncio.wait_for(tasks[1], 5)
    assert woken == ["b"]


class BrokenDeployment(FlakyDeployment):
    """Its connect fails with something other than a connection error: the pool it dials was
    closed under it (its open cancelled), or a fault the prober does not know."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(refusals=1)
        self.error = error

    async def connect(self) -> object:
        await super().connect()  # refused once, like any outage
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("Session is closed"), asyncio.CancelledError()],
                         ids=["unexpected-error", "open-cancelled"])
async def test_a_prober_that_cannot_go_on_wakes_its_waiters_instead_of_stranding_them(error: BaseException) -> None:
    deployment, tasks = BrokenDeployment(error), []
    prober = _prober(deployment, tasks)
    woken: list[str] = []
    prober.wait(lambda: woken.append("a"), "down")
    await asyncio.wait([tasks[0]], timeout=5)
    assert tasks[0].done()
    await asyncio.sleep(0)  # the wake-ups run on the loop, one by one
    assert woken == ["a"], "each waiter goes back to its own connect, which reports what is wrong"
    assert not prober.down and not prober.waiting, "and a later waiter starts a new prober"
    deployment.refusals, deployment.error = 0, LinkError("refused")
    prober.wait(lambda: woken.append("b"), "down again")
    assert len(tasks) == 2
