"""prometheus_client counters and histograms without a lock per update, for families written only on the loop.

prometheus_client guards every value with a ``threading.Lock``: a counter increment costs about 340 ns and a
histogram observation about 770 ns, against about 60 ns for adding to a float. The request path records
about a dozen of them per request, all from the event loop's thread (the accountant's sinks), and a scrape
reads them on that thread too, so the lock orders nothing there. These subclasses keep prometheus_client's
families, labels and exposition and swap only the stored value (``bench/RESULTS.md``, issue 14, has the
side-by-side numbers). Families written from other threads (the learning loop's writer) keep the locked ones.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Histogram


class LoopValue:
    """The value interface prometheus_client's children read and write, as a bare float."""

    __slots__ = ("value",)
    _multiprocess = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.value = 0.0

    def inc(self, amount: float) -> None:
        self.value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = value

    def set_exemplar(self, exemplar: Any) -> None:
        raise NotImplementedError("exemplars are not recorded by the gateway's families")

    def get(self) -> float:
        return self.value

    def get_exemplar(self) -> None:
        return None


class LoopCounter(Counter):
    """A counter whose children add without a lock (call ``inc`` from the event loop's thread only)."""

    def _metric_init(self) -> None:
        self._value = LoopValue()
        self._created = time.time()

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")  # as prometheus_client
        if exemplar:
            raise NotImplementedError("exemplars are not recorded by the gateway's families")
        self._value.value += amount


class LoopHistogram(Histogram):
    """A histogram whose children observe without a lock (from the event loop's thread only)."""

    def _metric_init(self) -> None:
        self._buckets = [LoopValue() for _ in self._upper_bounds]
        self._sum = LoopValue()
        self._created = time.time()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        if exemplar:
            raise NotImplementedError("exemplars are not recorded by the gateway's families")
        self._sum.value += amount
        # The first bucket whose upper bound is >= amount (the last bound is +Inf), as prometheus_client's loop.
        self._buckets[bisect_left(self._upper_bounds, amount)].value += 1
