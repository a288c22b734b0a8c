"""One backoff for step retries (SDK) and invocation retries (sidecar): finite and capped for
any number of failures, growing with them."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from handler_sdk import RetryPolicy as StepPolicy
from handler_sdk.backoff import ceiling, delay
from sidecar.invoker.retry import RetryPolicy

_failures = st.integers(min_value=0, max_value=10**9)
_interval = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)
_multiplier = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(failures=_failures, more=_failures, initial=_interval, multiplier=_multiplier, maximum=_interval,
       floor=st.floats(min_value=0.0, max_value=1.0))
def test_a_delay_is_finite_capped_and_its_ceiling_never_shrinks(
        failures: int, more: int, initial: float, multiplier: float, maximum: float, floor: float) -> None:
    cap = ceiling(failures, initial, multiplier, maximum)
    assert 0.0 <= cap <= maximum
    assert cap <= ceiling(failures + more, initial, multiplier, maximum)
    drawn = delay(failures, initial, multiplier, maximum, floor=floor, rng=random.Random(failures))
    assert cap * floor <= drawn <= cap


def test_the_sidecar_backs_off_after_thousands_of_failures() -> None:
    policy = RetryPolicy(initial_interval_s=0.1, multiplier=2.0, max_interval_s=10.0, max_attempts=10**9)
    assert 5.0 <= policy.delay_s(2000) <= 10.0  # 2.0 ** 1999 overflows a float
    assert 5.0 <= policy.delay_s(10**9) <= 10.0


def test_a_step_backs_off_after_a_billion_failures_at_once() -> None:
    assert StepPolicy(multiplier=1.0, initial_interval=0.5).delay_cap(10**9) == 0.5  # no loop over failures
    assert StepPolicy(multiplier=3.0).delay_cap(10**9) == 10.0
