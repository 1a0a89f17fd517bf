"""The lock-free counters and histograms expose exactly what prometheus_client's own would after the same updates."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.telemetry.catalog import DURATION_BUCKETS, FAMILIES, SPECS, build
from gateway.telemetry.loop_values import LoopCounter, LoopHistogram
from gateway.telemetry.metrics import RECORDED

# Both sides of every bucket bound, zero, a negative amount, +Inf and a huge value.
AMOUNTS = [0.0, -1.0, 0.005, 0.0050001, 0.004999, 1, 2.5, 2.6, 119.9, 120, 120.1, 1e12, float("inf")]


def exposition(counter_kind: type[Counter], histogram_kind: type[Histogram]) -> bytes:
    registry = CollectorRegistry()
    counter = counter_kind("t_requests_total", "help", ["tier"], registry=registry)
    histogram = histogram_kind("t_duration_seconds", "help", ["tier"], registry=registry, buckets=DURATION_BUCKETS)
    plain = histogram_kind("t_score", "help", registry=registry)
    for index, amount in enumerate(AMOUNTS):
        tier = "small" if index % 3 else "large"
        counter.labels(tier).inc(abs(amount) if amount != float("inf") else 1)
        counter.labels(tier).inc()
        histogram.labels(tier).observe(amount)
        plain.observe(amount)
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_same_exposition_as_prometheus_client() -> None:
    assert exposition(LoopCounter, LoopHistogram) == exposition(Counter, Histogram)


def test_counter_still_refuses_a_negative_increment() -> None:
    counter = LoopCounter("t_total", "help", registry=None)
    with pytest.raises(ValueError):
        counter.inc(-1)


def test_exemplars_are_refused_before_anything_is_counted() -> None:
    counter = LoopCounter("t_total", "help", registry=None)
    histogram = LoopHistogram("t_seconds", "help", registry=None)
    with pytest.raises(NotImplementedError):
        counter.inc(1, {"trace_id": "abc"})
    with pytest.raises(NotImplementedError):
        histogram.observe(0.1, {"trace_id": "abc"})
    assert counter._value.get() == 0.0 and histogram._sum.get() == 0.0


def test_every_lock_free_family_is_a_catalogued_counter_or_histogram() -> None:
    """A misspelt name in RECORDED would silently leave that family locked (and unchecked)."""
    assert RECORDED <= {spec.name for spec in FAMILIES if spec.kind != "gauge"}
    assert all(isinstance(build(SPECS[name], loop_only=True), (LoopCounter, LoopHistogram)) for name in RECORDED)
    # ... and the learning loop's families, written from its writer thread, keep prometheus_client's locks.
    assert not any(name.startswith(("tiergate_shadow", "tiergate_judge", "tiergate_label", "tiergate_learning"))
                   for name in RECORDED)
