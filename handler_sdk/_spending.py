"""What an invocation has spent, and the budget its steps may not run past.

The sum is taken from the journal (every ``Run`` entry's ``cost``, failed tries included) plus
this attempt's new entries, so a replayed step is never counted twice and a crash loses nothing
that was journaled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .errors import BudgetExceeded, Paused
from .protocol import Entry, Run

#: What ``cost=`` may be: a number, or a function of the step's result that returns one.
Cost = float | Callable[[Any], Any] | None

ON_BUDGET = ("fail", "pause")

#: How a refusal's message begins: what tells it from a step's own 402 on replay.
BUDGET_EXCEEDED = "budget exceeded:"


class CostError(ValueError):
    """A cost that no sum can hold: not a number, negative, or not finite."""


def checked_cost(value: object, where: str) -> float:
    """``value`` as a cost, or ``CostError`` naming ``where`` it came from."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CostError(f"{where} is {value!r} ({type(value).__name__}), not a number")
    if not math.isfinite(value) or value < 0:
        raise CostError(f"{where} is {value!r}: a cost must be a finite number, 0 or more")
    return float(value)


def check_cost_option(cost: object) -> None:
    """Refuse a ``cost=`` that is neither a number nor a function before the step claims its index."""
    if cost is not None and not callable(cost):
        checked_cost(cost, "cost=")


def cost_of_result(cost: Cost, result: Any) -> float | None:
    """What the successful try cost: ``cost=`` itself, or what it returns for ``result``."""
    if cost is None:
        return None
    if not callable(cost):
        return float(cost)
    try:
        value = cost(result)
    except Exception as exc:
        raise CostError(f"cost= raised {type(exc).__name__}: {exc}") from exc
    return checked_cost(value, "cost= returned a value that")


def plus(total: float | None, cost: float | None) -> float | None:
    """A running sum in which ``None`` means that nothing was reported yet."""
    if cost is None:
        return total
    return cost if total is None else total + cost


def money(amount: float) -> str:
    """An amount without float noise: ``1.5``, ``0.000123``, ``12``."""
    return f"{amount:.6f}".rstrip("0").rstrip(".")


class Spending:
    """One attempt's view of its invocation's spending and budget.

    ``budget`` is the sidecar's (an ``x-budget`` header, an operator's resume) when it sent one,
    else the handler's ``budget=``; ``None`` is no cap.
    """

    def __init__(self, journal: Sequence[Entry], budget: float | None, on_budget: str) -> None:
        self.spent = sum(entry.cost for entry in journal if type(entry) is Run and entry.cost is not None)
        self.budget = budget
        self.on_budget = on_budget

    def record(self, entry: Run) -> None:
        """This attempt journaled ``entry``: its cost is spent."""
        if entry.cost is not None:
            self.spent += entry.cost

    def refusal(self, pending: float) -> BudgetExceeded | None:
        """Why a try may not run, with ``pending`` spent by the step's earlier tries, or None.

        With ``on_budget="pause"`` it raises ``Paused`` instead: the attempt ends, the invocation
        waits for an operator to raise its budget, and the step runs again from its first try.
        """
        if self.budget is None:
            return None
        spent = self.spent + pending
        if spent < self.budget:
            return None
        reason = f"{BUDGET_EXCEEDED} spent {money(spent)} of {money(self.budget)}"
        if self.on_budget == "pause":
            raise Paused(reason)
        return BudgetExceeded(reason)
