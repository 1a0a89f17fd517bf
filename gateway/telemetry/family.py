"""Lock-free counter and histogram families, rendered into prometheus-client metric families at scrape time.

Why not ``prometheus_client.Counter``: its children take a lock on every increment and each counter drags
a ``_created`` series along. Every write here happens on the event loop thread (the accounting sink), and
a scrape reads on that same thread, so a child is just a float or a list of bucket counts: the per-request
cost is a few attribute additions and one ``bisect``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

Kind = Literal["counter", "gauge", "histogram"]


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are "less than or equal".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Family:
    """One metric family and its labelled children. ``child(...)`` is for binding once, not per request."""

    def __init__(self, name: str, documentation: str, kind: Kind, labels: Sequence[str] = (),
                 buckets: Sequence[float] | None = None) -> None:
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end with _total")
        if kind == "histogram" and not buckets:
            raise ValueError(f"histogram {name} needs buckets")
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.labels = tuple(labels)
        self.buckets = tuple(sorted(float(b) for b in buckets or ()))
        self.children: dict[tuple[str, ...], CounterChild | HistogramChild] = {}

    def counter(self, *values: str) -> CounterChild:
        child = self._child(values)
        assert isinstance(child, CounterChild)
        return child

    def histogram(self, *values: str) -> HistogramChild:
        child = self._child(values)
        assert isinstance(child, HistogramChild)
        return child

    def _child(self, values: tuple[str, ...]) -> CounterChild | HistogramChild:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labels):
                raise ValueError(f"{self.name} takes labels {self.labels}, got {values}")
            child = HistogramChild(self.buckets) if self.kind == "histogram" else CounterChild()
            self.children[values] = child
        return child

    def metric(self) -> Metric:
        labels = list(self.labels)
        if self.kind == "histogram":
            histogram = HistogramMetricFamily(self.name, self.documentation, labels=labels)
            for key, child in self.children.items():
                assert isinstance(child, HistogramChild)
                histogram.add_metric(list(key), child.cumulative(), child.sum)
            return histogram
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.documentation, labels=labels)
        else:
            family = GaugeMetricFamily(self.name, self.documentation, labels=labels)
        for key, child in self.children.items():
            assert isinstance(child, CounterChild)
            family.add_metric(list(key), child.value)
        return family


def gauge(name: str, documentation: str, samples: Iterator[tuple[Sequence[str], float]] | None = None,
          labels: Sequence[str] = ()) -> GaugeMetricFamily:
    """A gauge computed at scrape time (queue depths, in-flight requests, the realised share)."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, value in samples or iter(()):
        family.add_metric(list(values), value)
    return family
