"""``CircuitBreaker``: a name that steps share, so that a failing dependency is left alone for a while.

The state is the sidecar's, shared by every invocation and every handler process connected to it;
this object only names the breaker and says how it behaves. Declare one per dependency at module
level and pass it (or its name) to ``ctx.run(..., breaker=)``.
"""

from __future__ import annotations

import math

from .protocol import BreakerSpec, name_problem

#: Every breaker declared in this process, by name: ``breaker="llm"`` finds its declaration here.
_DECLARED: dict[str, CircuitBreaker] = {}


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive transient failures of the steps naming it,
    across every invocation and handler process of the sidecar; while open (``cool_down``
    seconds), a step naming it takes its fallback, or its invocation backs off without running
    it. Then one trial step runs: its success closes the breaker, its failure opens it again.

    A ``TerminalError`` from a step counts as success (the dependency answered); every other
    exception of a try counts as a failure. Declarations with the same name should agree: the
    sidecar keeps the settings it heard last.
    """

    __slots__ = ("name", "failure_threshold", "cool_down", "spec")

    def __init__(self, name: str, *, failure_threshold: int = 5, cool_down: float = 30.0) -> None:
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(f"breaker name: {problem}")
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be a whole number, 1 or more, got {failure_threshold!r}")
        if not 0 < cool_down < math.inf:
            raise ValueError(f"cool_down must be a positive number of seconds, got {cool_down!r}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cool_down = float(cool_down)
        self.spec = BreakerSpec(name, failure_threshold, max(1, round(cool_down * 1000)))
        _DECLARED[name] = self

    def __repr__(self) -> str:
        return (f"CircuitBreaker({self.name!r}, failure_threshold={self.failure_threshold}, "
                f"cool_down={self.cool_down:g})")


def breaker_spec(breaker: CircuitBreaker | str) -> BreakerSpec:
    """What the sidecar is told of ``breaker``: a name not declared here gets the defaults."""
    if isinstance(breaker, CircuitBreaker):
        return breaker.spec
    if not isinstance(breaker, str):
        raise TypeError(f"breaker must be a CircuitBreaker or its name, got {breaker!r}")
    declared = _DECLARED.get(breaker)
    return declared.spec if declared is not None else CircuitBreaker(breaker).spec
