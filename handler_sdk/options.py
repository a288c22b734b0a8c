"""Small option Structs shared by the decorators and the context (one shape, two uses)."""

from __future__ import annotations

import random

import msgspec

from . import backoff


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often, how patiently and for how long to retry.

    On ``ctx.run`` it governs in-process retries of one step; on a handler decorator it is the
    invocation-level policy the sidecar applies (sent in discovery, in milliseconds).

    ``max_attempts`` counts every try, the first included. ``None`` means no limit for a step;
    on a decorator it leaves the choice to the sidecar's default. Delays grow from
    ``initial_interval`` by ``multiplier`` up to ``max_interval`` seconds, and each actual delay is
    drawn uniformly below that cap ("full jitter"), so that many failing callers do not retry in
    lockstep against a struggling dependency.

    ``max_elapsed`` (seconds since the step's first try) stops the retries of a step whose next
    try would start later than that: a vendor down for hours costs minutes, not the night.
    ``non_retryable`` lists exception types that fail the step (or, on a decorator, the
    invocation) at once, as terminal: a validation or an authentication error will not heal.
    """

    max_attempts: int | None = None
    initial_interval: float = 0.1
    multiplier: float = 2.0
    max_interval: float = 10.0
    max_elapsed: float | None = None
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (it counts the first try)")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ValueError("retry intervals must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_elapsed is not None and not self.max_elapsed >= 0:
            raise ValueError(f"max_elapsed must be a number of seconds, 0 or more, got {self.max_elapsed!r}")
        if not isinstance(self.non_retryable, tuple) or not all(
                isinstance(kind, type) and issubclass(kind, BaseException) for kind in self.non_retryable):
            raise TypeError(f"non_retryable must be a tuple of exception types, got {self.non_retryable!r}")

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` tries used up the policy."""
        return self.max_attempts is not None and attempts >= self.max_attempts

    def gives_up(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one of the ``non_retryable`` kinds."""
        return isinstance(exc, self.non_retryable)

    def out_of_time(self, elapsed: float, delay: float) -> bool:
        """Whether a next try ``delay`` seconds from now would start past ``max_elapsed``."""
        return self.max_elapsed is not None and elapsed + delay > self.max_elapsed

    def delay_cap(self, failures: int) -> float:
        """Upper bound, in seconds, of the pause after the ``failures``-th failed try (1-based)."""
        return backoff.ceiling(failures, self.initial_interval, self.multiplier, self.max_interval)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The pause after the ``failures``-th failed try, drawn below :meth:`delay_cap`."""
        return backoff.delay(failures, self.initial_interval, self.multiplier, self.max_interval, rng=rng)


#: In-process retries of a step when ``ctx.run`` is given no policy: a transient failure (a
#: dropped connection) is retried twice, quickly; anything persistent fails the step for good
#: soon enough that the handler can react to it.
DEFAULT_STEP_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.1)
