"""IDs sort by creation; retry delays grow, stay capped and jittered."""

from __future__ import annotations

import random

from handler_sdk.protocol import RetrySpec
from sidecar.cli.config import Settings
from sidecar.ids import IdGenerator, looks_like_invocation_id
from sidecar.invoker.retry import RetryPolicy


def _value(invocation_id: str) -> int:
    """The 130-bit number an ID spells (Crockford base32)."""
    return int(invocation_id[4:].translate(str.maketrans("ABCDEFGHJKMNPQRSTVWXYZ", "abcdefghijklmnopqrstuv")), 32)


def test_invocation_ids_are_unguessable_from_the_previous_one() -> None:
    """Made back to back (most in the same millisecond), no ID is near the one before it: the
    bits below the partition are fresh random bits, not a counter."""
    ids = IdGenerator()
    made = [ids.invocation_id() for _ in range(1000)]
    assert all(looks_like_invocation_id(i) for i in made) and len(set(made)) == len(made)
    for previous, following in zip(made, made[1:]):
        assert abs(_value(following) - _value(previous)) >= 2**32, (previous, following)
    low = [_value(i) & (2**64 - 1) for i in made]
    assert sum(b - a == 1 for a, b in zip(low, low[1:])) == 0


def test_invocation_ids_sort_by_their_millisecond() -> None:
    ids = IdGenerator()
    made = [ids.invocation_id() for _ in range(3000)]
    millis = [_value(i) >> 80 for i in made]
    assert millis == sorted(millis)  # made in order, so their milliseconds never go back
    assert [_value(i) >> 80 for i in sorted(made)] == millis  # and sorting by ID keeps that order


def test_retry_policy_takes_handler_fields_and_sidecar_defaults() -> None:
    policy = RetryPolicy.resolve(RetrySpec(max_attempts=3, initial_interval_ms=200), Settings())
    assert policy.max_attempts == 3 and policy.initial_interval_s == 0.2
    assert policy.multiplier == Settings().retry_multiplier
    assert not policy.exhausted(2) and policy.exhausted(3)


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_interval_s=0.1, multiplier=2.0, max_interval_s=1.0, max_attempts=10)
    rng = random.Random(7)
    for attempts, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [policy.delay_s(attempts, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not constant
