"""Plain counters for the hot paths, read by `/metrics` when it is scraped.

Counting must cost the paths it watches next to nothing: a dict increment, a bisect. Nothing here
locks, formats or allocates per event; the Prometheus families are built from these only when a
scrape asks (`ops.metrics`). Everything is touched from the event loop only, except a store's
writer stats, which its writer thread updates and a scrape reads (a torn read is one batch off).
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

# Label values beyond this many distinct keys are counted under OTHER: a sender may invent any
# number of notification types, and a scrape must stay small whatever they do.
MAX_LABEL_KEYS = 200
OTHER = "other"


@dataclass(frozen=True, slots=True)
class BucketsSnapshot:
    """Cumulative counts per upper bound (the last is +Inf), their sum and total."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float
    count: int


class Buckets:
    """A histogram's counts: `observe(value, times)` costs one bisect."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += times
        self._sum += value * times

    def snapshot(self) -> BucketsSnapshot:
        cumulative: list[int] = []
        running = 0
        for count in self._counts:
            running += count
            cumulative.append(running)
        return BucketsSnapshot((*self._bounds, float("inf")), tuple(cumulative), self._sum, running)


class LabelCounts:
    """Counts per label key (e.g. (type, priority)), at most MAX_LABEL_KEYS distinct keys."""

    __slots__ = ("_counts", "_other")

    def __init__(self, other: Hashable) -> None:
        self._counts: dict[Hashable, int] = {}
        # Where keys past the cap are counted, shaped like a key (e.g. ("other", "normal")).
        self._other = other

    def add(self, key: Hashable, times: int = 1) -> None:
        counts = self._counts
        if key in counts:
            counts[key] += times
        elif len(counts) < MAX_LABEL_KEYS:
            counts[key] = times
        else:
            counts[self._other] = counts.get(self._other, 0) + times

    def items(self) -> Iterator[tuple[Hashable, int]]:
        return iter(list(self._counts.items()))

    def total(self) -> int:
        return sum(self._counts.values())
