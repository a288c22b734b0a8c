"""Circuit breakers: the state every step that names one shares, held by one worker of the sidecar.

A breaker counts the consecutive transient failures of the tries of steps naming it, from every
invocation and every handler process. At ``failure_threshold`` it opens for ``cool_down``: steps
that ask are refused (they take their fallback, or their invocation backs off). Once the cool-down
is over, the next step to ask runs as the one trial (half-open): its success closes the breaker,
its failure opens it again. A trial whose step never reports (its attempt died) is forgotten after
a cool-down, and the next asker becomes the trial.

While closed, a link is given a lease: its steps run without asking. ``on_open`` is told when a
breaker opens, so that every lease is revoked.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from handler_sdk.protocol import BreakerSpec

from ..clock import now_ms

#: While a trial runs, refused steps are told to look again this soon (or when the trial expires).
_TRIAL_RECHECK_MS = 1000


class Decision(msgspec.Struct, frozen=True, array_like=True):
    """Whether a try may run; ``lease``: the breaker is closed; else refused until ``open_until_ms``.
    ``epoch``: how many times the breaker had opened (a lease older than a revocation is void)."""

    granted: bool
    lease: bool = False
    open_until_ms: int = 0
    epoch: int = 0


class BreakerView(msgspec.Struct, frozen=True):
    """One breaker as ``GET /breakers`` shows it."""

    name: str
    state: str  # "closed" | "open" | "half-open"
    failures: int
    open_until_ms: int | None


class Breaker:
    """One breaker's state machine; the clock is passed in, so that tests drive it."""

    __slots__ = ("name", "threshold", "cool_down_ms", "failures", "open_until_ms", "trial_until_ms", "epoch")

    def __init__(self, spec: BreakerSpec) -> None:
        self.name = spec.name
        self.threshold = spec.failure_threshold
        self.cool_down_ms = spec.cool_down_ms
        self.failures = 0
        #: Open (or half-open, once passed) until then; None: closed.
        self.open_until_ms: int | None = None
        #: Half-open: the trial step that was let through is awaited until then.
        self.trial_until_ms: int | None = None
        #: How many times it opened.
        self.epoch = 0

    def configure(self, spec: BreakerSpec) -> None:
        self.threshold, self.cool_down_ms = spec.failure_threshold, spec.cool_down_ms

    def state(self, now: int) -> str:
        if self.open_until_ms is None:
            return "closed"
        return "open" if now < self.open_until_ms else "half-open"

    def ask(self, now: int) -> Decision:
        if self.open_until_ms is None:
            return Decision(True, lease=True, epoch=self.epoch)
        if now < self.open_until_ms:
            return Decision(False, open_until_ms=self.open_until_ms, epoch=self.epoch)
        if self.trial_until_ms is not None and now < self.trial_until_ms:
            return Decision(False, open_until_ms=min(self.trial_until_ms, now + _TRIAL_RECHECK_MS), epoch=self.epoch)
        self.trial_until_ms = now + max(self.cool_down_ms, _TRIAL_RECHECK_MS)
        return Decision(True, epoch=self.epoch)

    def report(self, now: int, failed: bool) -> bool:
        """Count one try's outcome; whether the breaker opened just now."""
        if not failed:
            if self.open_until_ms is None or self.trial_until_ms is not None:  # closed, or the trial passed
                self.reset()
            return False  # a success from before it opened proves nothing about now
        self.failures += 1
        if self.open_until_ms is None:
            if self.failures < self.threshold:
                return False
        elif self.trial_until_ms is None:  # open already: a late failure of a step from before
            return False
        self.open_until_ms = now + self.cool_down_ms
        self.trial_until_ms = None
        self.epoch += 1
        return True

    def reset(self) -> None:
        self.failures = 0
        self.open_until_ms = self.trial_until_ms = None

    def view(self, now: int) -> BreakerView:
        return BreakerView(self.name, self.state(now), self.failures, self.open_until_ms)


class BreakerBoard:
    """Every breaker the sidecar has heard of, by name (the owning worker's). ``on_open`` is
    told the name and epoch of a breaker that opened, to revoke its leases everywhere."""

    def __init__(self, set_open: Callable[[str, bool], None], on_open: Callable[[str, int], None],
                 clock: Callable[[], int] = now_ms) -> None:
        self._breakers: dict[str, Breaker] = {}
        #: Sets the ``sidecar_breaker_open`` gauge of a breaker.
        self._set_open = set_open
        self._on_open = on_open
        self._clock = clock

    def _breaker(self, spec: BreakerSpec) -> Breaker:
        breaker = self._breakers.get(spec.name)
        if breaker is None:
            breaker = self._breakers[spec.name] = Breaker(spec)
            self._set_open(spec.name, False)
        else:
            breaker.configure(spec)
        return breaker

    async def ask(self, spec: BreakerSpec) -> Decision:
        return self._breaker(spec).ask(self._clock())

    def report(self, spec: BreakerSpec, failed: bool) -> None:
        breaker = self._breaker(spec)
        was_open = breaker.open_until_ms is not None
        if breaker.report(self._clock(), failed):
            self._set_open(spec.name, True)
            self._on_open(spec.name, breaker.epoch)
        elif was_open and breaker.open_until_ms is None:
            self._set_open(spec.name, False)

    def views(self) -> list[BreakerView]:
        now = self._clock()
        return [self._breakers[name].view(now) for name in sorted(self._breakers)]

    def reset(self, name: str) -> bool:
        """Close breaker ``name``; False if there is none by that name."""
        breaker = self._breakers.get(name)
        if breaker is None:
            return False
        breaker.reset()
        self._set_open(name, False)
        return True
