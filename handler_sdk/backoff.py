"""Exponential backoff with jitter, shared by step retries (``ctx.run``) and the sidecar's
invocation retries, so that both grow, cap and spread their pauses the same way.

Imports nothing but the standard library: the sidecar uses it without the SDK's runtime.
"""

from __future__ import annotations

import math
import random


def ceiling(failures: int, initial: float, multiplier: float, maximum: float) -> float:
    """Seconds the pause after the ``failures``-th failed try (1-based) may last at most:
    ``initial * multiplier ** (failures - 1)``, capped at ``maximum``.

    Works in logarithms: after a few thousand failures (unlimited retries) the power itself
    would overflow a float. A multiplier below 1 counts as 1 (a pause never shrinks); negative
    intervals count as 0.
    """
    maximum = max(0.0, maximum)
    initial = min(max(0.0, initial), maximum)
    if failures <= 1 or multiplier <= 1.0 or initial == 0.0 or initial == maximum:
        return initial
    if math.log(initial) + (failures - 1) * math.log(multiplier) >= math.log(maximum):
        return maximum
    # Below the cap the power is below maximum / initial: finite unless initial is minute.
    try:
        return min(maximum, initial * multiplier ** (failures - 1))
    except OverflowError:
        return maximum


def delay(failures: int, initial: float, multiplier: float, maximum: float, *,
          floor: float = 0.0, rng: random.Random | None = None) -> float:
    """The pause after the ``failures``-th failed try: drawn uniformly between ``floor`` times
    the :func:`ceiling` and the ceiling. Jitter spreads the retries of many callers that failed
    together; a ``floor`` keeps even the unluckiest draw from retrying in a hot loop."""
    cap = ceiling(failures, initial, multiplier, maximum)
    return min(cap, (rng or random).uniform(cap * floor, cap))  # min: uniform may round up past it
