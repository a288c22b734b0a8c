"""Invocation-level retry policy: exponential backoff with jitter, then ``paused``.

"Equal jitter" (half the capped exponential, plus a uniform draw over the other half) spreads the
retries of many invocations that failed together, e.g. when a handler deployment restarts, instead
of having them all knock again at the same instant, while never retrying in a hot loop.
"""

from __future__ import annotations

import random

import msgspec

from handler_sdk.backoff import delay
from handler_sdk.protocol import RetrySpec

from ..cli.config import Settings


class RetryPolicy(msgspec.Struct, frozen=True):
    initial_interval_s: float
    multiplier: float
    max_interval_s: float
    max_attempts: int

    @classmethod
    def resolve(cls, spec: RetrySpec, defaults: Settings) -> RetryPolicy:
        """The handler's own policy where it set a field, the sidecar's defaults elsewhere."""
        return cls(
            initial_interval_s=spec.initial_interval_ms / 1000 if spec.initial_interval_ms is not None
            else defaults.retry_initial_interval_s,
            multiplier=spec.multiplier if spec.multiplier is not None else defaults.retry_multiplier,
            max_interval_s=spec.max_interval_ms / 1000 if spec.max_interval_ms is not None
            else defaults.retry_max_interval_s,
            max_attempts=spec.max_attempts if spec.max_attempts is not None else defaults.retry_max_attempts,
        )

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        return delay(attempts, self.initial_interval_s, self.multiplier, self.max_interval_s, floor=0.5, rng=rng)
