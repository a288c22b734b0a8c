"""Hot-path metrics added up in plain Python and handed to prometheus-client once a second.

prometheus-client takes a lock for every increment and, in multiprocess mode, writes a
memory-mapped file; a histogram observation does that twice and scans its buckets. Per request,
per step and per commit that cost a few percent of the sidecar's CPU. A tally keeps the counts in
ints and floats and applies them in one call per value at ``flush`` (``Metrics.flush``: each
worker's housekeeping once a second, and the admin endpoint before it answers a scrape), so a
scrape may see a worker's last second missing, never a value miscounted.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter, Histogram


class Tally(Protocol):
    def flush(self) -> None: ...


class CounterTally:
    """Increments of one counter (or one label set of it)."""

    __slots__ = ("_counter", "_pending")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            self._counter.inc(self._pending)
            self._pending = 0.0


class HistogramTally:
    """Observations of one histogram (or one label set of it), counted per bucket."""

    __slots__ = ("_histogram", "_bounds", "_counts", "_sum")

    def __init__(self, histogram: Histogram, buckets: Sequence[float]) -> None:
        self._histogram = histogram
        #: As the histogram's own: each bound is a bucket's ``le``, the last one +Inf.
        self._bounds = (*buckets, math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        # prometheus-client's Histogram.observe increments the first bucket whose bound holds the
        # value, and the sum: the same, n at a time (tests/unit/test_tallies.py holds it to that).
        for index, count in enumerate(counts):
            if count:
                self._histogram._buckets[index].inc(count)
        self._histogram._sum.inc(self._sum)
        self._counts = [0] * len(counts)
        self._sum = 0.0


T = TypeVar("T", CounterTally, HistogramTally)


class Labelled(Generic[T]):
    """The tallies of a labelled metric, one per label values, made on first use."""

    __slots__ = ("_make", "_children")

    def __init__(self, make: Callable[[tuple[str, ...]], T]) -> None:
        self._make: Callable[[tuple[str, ...]], T] = make
        self._children: dict[tuple[str, ...], T] = {}

    def labels(self, *values: str) -> T:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._make(values)
        return child
