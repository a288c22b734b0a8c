"""The errors a handler sees, and the control-flow signals it must not see.

Two kinds of failure end an attempt. ``TerminalError`` is the one public way to say "do not retry":
the invocation fails for good with its code. Every other exception is retried by the sidecar,
``NondeterminismError`` included, so that fixed code can resume the invocation where it stopped.

Control-flow signals (``AttemptAborted``, ``Suspended``) derive from ``BaseException``: a user's
``except Exception:`` around a step must not swallow the news that the attempt is over.
"""

from __future__ import annotations

from typing import Any


class TerminalError(Exception):
    """Fail the step or the invocation without retrying it.

    Raised by handler code to end the invocation with ``code`` (an HTTP status, default 500) as
    its result; raised *to* handler code when a step failed for good, so that it can compensate.
    """

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.code))

    def __repr__(self) -> str:
        return f"TerminalError({self.message!r}, code={self.code})"


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
