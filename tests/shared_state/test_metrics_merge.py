"""Merging worker snapshots: counters and histograms summed (exited workers too), load gauges over live ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.cli import main
from gateway.workers.metrics_dir import WorkerMetrics, merge, snapshot


class Fixed:
    def __init__(self, requests: float, in_flight: float, threshold: float) -> None:
        self.requests, self.in_flight, self.threshold = requests, in_flight, threshold

    def collect(self):  # type: ignore[no-untyped-def]
        requests = CounterMetricFamily("tiergate_requests_total", "Requests.", labels=["tier"])
        requests.add_metric(["small"], self.requests)
        yield requests
        yield GaugeMetricFamily("tiergate_in_flight_requests", "In flight.", value=self.in_flight)
        yield GaugeMetricFamily("tiergate_routing_threshold", "Threshold.", value=self.threshold)


def registry(requests: float, in_flight: float, threshold: float) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Fixed(requests, in_flight, threshold))  # type: ignore[arg-type]
    return reg


def values(metrics: list) -> dict[str, float]:  # type: ignore[type-arg]
    return {s.name: s.value for m in metrics for s in m.samples}


def test_counters_of_exited_workers_stay_and_only_live_load_gauges_add_up() -> None:
    own = snapshot(registry(5, 2, 0.4))
    live = snapshot(registry(7, 3, 0.9))
    exited = snapshot(registry(11, 4, 0.1))
    merged = values(merge(own, [(live, True), (exited, False)]))
    assert merged["tiergate_requests_total"] == 23
    assert merged["tiergate_in_flight_requests"] == 5  # own 2 + live 3; the exited worker's 4 is gone
    assert merged["tiergate_routing_threshold"] == 0.4  # the answering worker's own


def test_a_worker_reads_the_other_snapshots_from_the_directory(tmp_path: Path) -> None:
    other = WorkerMetrics(registry(7, 1, 0.5), tmp_path)
    other.path = tmp_path / "worker-999999999.json"  # no such process: an exited worker
    other.write()
    mine = WorkerMetrics(registry(5, 1, 0.5), tmp_path)
    text = mine.exposition().decode()
    assert 'tiergate_requests_total{tier="small"} 12.0' in text
    assert "tiergate_in_flight_requests 1.0" in text


def test_serve_with_workers_stops_before_starting_any_worker_when_a_model_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"tiers": {
        "small": {"kind": "transformers", "model": "m", "path": str(tmp_path / "missing")},
        "large": {"kind": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1"}}}))
    assert main(["serve", "--config", str(config), "--workers", "2", "--port", "0"]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err  # named, before any worker process
