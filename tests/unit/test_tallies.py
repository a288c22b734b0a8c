"""Tallies hand prometheus-client exactly what direct increments and observations would have."""

from __future__ import annotations

import math

from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sidecar.tallies import CounterTally, HistogramTally, Labelled

BUCKETS = (0.002, 0.01, 0.5, 1, 10, 3600)


def _text(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in _text(registry) if line[0] != "#"}


@given(values=st.lists(st.one_of(st.sampled_from(BUCKETS), st.floats(0, 10_000)), max_size=60),
       flushes=st.sets(st.integers(0, 60)))
def test_a_histogram_tally_matches_direct_observations(values: list[float], flushes: set[int]) -> None:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h_seconds", "h", ["service"], buckets=BUCKETS, registry=direct_registry)
    tallied = Histogram("h_seconds", "h", ["service"], buckets=BUCKETS, registry=tallied_registry)
    made: list[HistogramTally] = []

    def make(labels: tuple[str, ...]) -> HistogramTally:
        made.append(HistogramTally(tallied.labels(*labels), BUCKETS))
        return made[-1]

    tallies = Labelled(make)
    for n, value in enumerate(values):
        service = "a" if n % 3 else "b"
        direct.labels(service).observe(value)
        tallies.labels(service).observe(value)
        if n in flushes:
            for tally in made:
                tally.flush()
    for tally in made:
        tally.flush()
    assert len(made) == len({"a" if n % 3 else "b" for n in range(len(values))})
    direct_samples, tallied_samples = _samples(direct_registry), _samples(tallied_registry)
    assert direct_samples.keys() == tallied_samples.keys()
    for name, value in direct_samples.items():  # counts exactly; sums as floats added in another order
        assert math.isclose(tallied_samples[name], value, rel_tol=1e-9) if "_sum" in name \
            else tallied_samples[name] == value, name


@given(amounts=st.lists(st.floats(0, 1000), max_size=40))
def test_a_counter_tally_matches_direct_increments(amounts: list[float]) -> None:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct = Counter("c", "c", registry=direct_registry)
    tally = CounterTally(Counter("c", "c", registry=tallied_registry))
    for amount in amounts:
        direct.inc(amount)
        tally.inc(amount)
    tally.flush()
    tally.flush()  # nothing more to hand over
    assert [float(line.split()[-1]) for line in _text(direct_registry) if line.startswith("c_total")] == \
        [float(line.split()[-1]) for line in _text(tallied_registry) if line.startswith("c_total")]
