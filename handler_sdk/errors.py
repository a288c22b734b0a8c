"""The errors a handler sees, and the control-flow signals it must not see.

Two kinds of failure end an attempt. ``TerminalError`` is the one public way to say "do not retry":
the invocation fails for good with its code. Every other exception is retried by the sidecar,
``NondeterminismError`` included, so that fixed code can resume the invocation where it stopped.

Control-flow signals (``AttemptAborted``, ``Suspended``) derive from ``BaseException``: a user's
``except Exception:`` around a step must not swallow the news that the attempt is over.
"""

from __future__ import annotations

import datetime
from typing import Any


class TerminalError(Exception):
    """Fail the step or the invocation without retrying it.

    Raised by handler code to end the invocation with ``code`` (an HTTP status, default 500) as
    its result; raised *to* handler code when a step failed for good, so that it can compensate.
    """

    def __init__(self, message: str, code: int = 500, cost: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: What the failed try cost (raised inside ``ctx.run``): counted in the step's cost.
        self.cost = cost

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.code, self.cost))

    def __repr__(self) -> str:
        return f"TerminalError({self.message!r}, code={self.code})"


class BudgetExceeded(TerminalError):
    """A step did not run: the invocation had spent its budget (``budget=``, ``x-budget``).

    Code 402. It is journaled like any failed step, so a replay raises it at the same place.
    """

    def __init__(self, message: str, code: int = 402, cost: float | None = None) -> None:
        super().__init__(message, code, cost)

    def __repr__(self) -> str:
        return f"BudgetExceeded({self.message!r})"


class RetryableError(Exception):
    """A try of a step failed in a way worth retrying, and says how.

    ``retry_after`` (seconds, or a ``timedelta``) sets the pause before the next try, as a
    vendor's ``Retry-After`` asks; ``cost`` is what the failed try cost, counted in the step's
    cost and against the invocation's budget. Any other exception is retried too, as costing
    nothing, after the policy's own backoff.
    """

    def __init__(self, message: str, retry_after: float | datetime.timedelta | None = None,
                 cost: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after.total_seconds() if isinstance(retry_after, datetime.timedelta) else retry_after
        self.cost = cost

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.retry_after, self.cost))

    def __repr__(self) -> str:
        return f"RetryableError({self.message!r}, retry_after={self.retry_after!r})"


_HOW_TO_FIX = (
    "The handler no longer issues the steps this invocation recorded, in the same order: "
    "restore the old sequence (append new steps after the recorded ones, or branch on a value "
    "the journal holds) and the invocation resumes when it is retried."
)


class NondeterminismError(Exception):
    """The code issued a step that differs from the journal's entry at the same index.

    Replay never takes a recorded result for a different step: it stops here, and the attempt
    fails as retryable so that corrected code can pick the invocation up. ``expected`` is what
    the code asked for and ``recorded`` what the journal holds, each as kind and name (the two
    things replay matches on; payloads are left out, they may be large or private).
    """

    def __init__(self, invocation_id: str, index: int, expected: str, recorded: str) -> None:
        self.invocation_id = invocation_id
        self.index = index
        self.expected = expected
        self.recorded = recorded
        super().__init__(
            f"invocation {invocation_id}: journal entry {index} is {recorded}, "
            f"but the code issued {expected}. {_HOW_TO_FIX}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.invocation_id, self.index, self.expected, self.recorded))


class AttemptAborted(BaseException):
    """This attempt was killed or replaced: no more of its handler code may take effect.

    Raised by every context method once the attempt is over. A ``BaseException`` on purpose
    (see the module docstring); the SDK catches it, user code should not.
    """


class Suspended(AttemptAborted):
    """The attempt suspended itself: it waited only on timers or awakeables for too long.

    Raised at the handler's pending awaits so that it unwinds (its ``finally`` blocks run) and
    frees itself; the sidecar starts a new attempt, which replays the journal, once one of the
    awaited entries completes. Internal: the SDK catches it, user code should not.
    """


class Paused(AttemptAborted):
    """The attempt ends because its invocation goes ``paused`` (its budget is spent and the handler
    says ``on_budget="pause"``); ``reason`` is the status reason. Internal: the SDK catches it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
