"""The metrics sink: families and names, the numbers one outcome adds, scrape-time gauges, cheap recording."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.accounting import Accountant, RequestOutcome
from gateway.admission.auth import Principal
from gateway.decisions import RouteDecider
from gateway.learning.metrics import LearningMetrics
from gateway.pricing import PriceTable
from gateway.settings import Price, Settings
from gateway.shared_state.key_metrics import KeyMetrics
from gateway.telemetry.catalog import Spec, build, collected
from gateway.telemetry.metrics import FAMILIES, GatewayMetrics
from routers.base import RouteDecision
from tests.support.doubles import FixedRouter
from tests.support.prom import families, sample

PRICES = {"gpt-4o-mini": Price(prompt=0.15, completion=0.60, cached_prompt=0.075),
          "gpt-4o": Price(prompt=2.50, completion=10.0, cached_prompt=1.25)}


class StubBackend:
    def __init__(self, name: str, model: str, waiting: int = 0) -> None:
        self.name, self.model, self.waiting = name, model, waiting


class LocalStub(StubBackend):
    def queue_depth(self) -> int:
        return self.waiting

    def in_flight(self) -> int:
        return 1


class QueueRouter(FixedRouter):
    def queue_depth(self) -> int:
        return 7


def make(router: Any = None, **routing: Any) -> tuple[GatewayMetrics, Accountant]:
    settings = Settings(tiers={"small": {"kind": "openai", "model": "gpt-4o-mini"},
                               "large": {"kind": "openai", "model": "gpt-4o"}}, routing=routing)
    backends: Any = {"small": LocalStub("local", "gpt-4o-mini", waiting=3), "large": StubBackend("large", "gpt-4o")}
    service = RouteDecider(settings, backends, router or FixedRouter())
    accountant = Accountant(pricer=PriceTable(PRICES, large_model="gpt-4o"))
    metrics = GatewayMetrics(service, accountant)
    accountant.sinks.append(metrics)
    return metrics, accountant


def answered(accountant: Accountant, tier: str, **fields: Any) -> RequestOutcome:
    outcome = accountant.open("r")
    outcome.decision = RouteDecision(tier, "score_above_threshold" if tier == "large" else "score_below_threshold",  # type: ignore[arg-type]
                                     0.7 if tier == "large" else 0.2, 0.5)
    outcome.tier, outcome.backend = tier, "local" if tier == "small" else "large"
    outcome.model = "gpt-4o-mini" if tier == "small" else "gpt-4o"
    for key, value in fields.items():
        setattr(outcome, key, value)
    accountant.finish(outcome)
    return outcome


def test_family_names_follow_prometheus_conventions() -> None:
    for spec in FAMILIES:
        assert re.fullmatch(r"tiergate_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        if spec.kind == "histogram":
            assert spec.name.endswith(("_seconds", "_score")), spec.name
        assert not set(spec.labels) & {"request_id", "user", "key", "prompt"}, spec.name


def test_every_family_is_in_its_own_registry_not_the_global_one() -> None:
    first, _ = make()
    second, _ = make()
    text = first.exposition().decode()
    assert set(families(text)) == {spec.name for spec in FAMILIES}
    assert first.registry is not second.registry
    assert not any(name.startswith("tiergate_") for name in REGISTRY._names_to_collectors)


def test_one_outcome_adds_its_tokens_cost_and_savings() -> None:
    metrics, accountant = make()
    answered(accountant, "small", prompt_tokens=1000, completion_tokens=500, cached_prompt_tokens=200,
             routing_seconds=0.002, upstream_seconds=0.3, stream=True, ttft_seconds=0.1)
    text = metrics.exposition().decode()
    labels = {"tier": "small", "model": "gpt-4o-mini"}
    assert sample(text, "tiergate_prompt_tokens_total", **labels) == 1000
    assert sample(text, "tiergate_cached_prompt_tokens_total", **labels) == 200
    assert sample(text, "tiergate_completion_tokens_total", **labels) == 500
    cost = (800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1e6
    counterfactual = (800 * 2.5 + 200 * 1.25 + 500 * 10.0) / 1e6
    assert sample(text, "tiergate_cost_usd_total", **labels) == pytest.approx(cost)
    assert sample(text, "tiergate_counterfactual_cost_usd_total", tier="small") == pytest.approx(counterfactual)
    assert sample(text, "tiergate_saved_usd_total", tier="small") == pytest.approx(counterfactual - cost)
    assert sample(text, "tiergate_requests_total", tier="small", backend="local", outcome="success",
                  stream="true") == 1
    assert sample(text, "tiergate_time_to_first_token_seconds_count", tier="small") == 1
    assert sample(text, "tiergate_routing_duration_seconds_bucket", le="0.0025") == 1
    assert sample(text, "tiergate_routing_score_bucket", le="0.2") == 1
    assert sample(text, "tiergate_routing_score_bucket", le="0.15") == 0
    assert sample(text, "tiergate_routing_decisions_total", tier="small", reason="score_below_threshold") == 1


def test_large_tier_saves_nothing_and_errors_retries_fallbacks_are_counted() -> None:
    metrics, accountant = make()
    answered(accountant, "large", prompt_tokens=100, completion_tokens=10, retries=2, fallback=True)
    answered(accountant, "large", outcome="upstream_error", status=502, error_kind="http_5xx")
    answered(accountant, "large", outcome="timeout", status=504, error_kind="timeout")
    text = metrics.exposition().decode()
    assert sample(text, "tiergate_saved_usd_total") == 0
    assert sample(text, "tiergate_upstream_errors_total", tier="large", kind="http_5xx") == 1
    assert sample(text, "tiergate_upstream_errors_total", tier="large", kind="timeout") == 1
    assert sample(text, "tiergate_requests_total", outcome="timeout") == 1
    assert sample(text, "tiergate_retries_total", tier="large") == 2
    assert sample(text, "tiergate_fallbacks_total", tier="large") == 1


def test_a_request_rejected_before_routing_is_counted_under_tier_none() -> None:
    metrics, accountant = make()
    outcome = accountant.open("r")
    outcome.outcome, outcome.status = "client_error", 400
    accountant.finish(outcome)
    accountant.finish(outcome)  # a second finish is ignored
    text = metrics.exposition().decode()
    assert sample(text, "tiergate_requests_total", tier="none", backend="none", outcome="client_error") == 1
    assert sample(text, "tiergate_requests_total") == 1
    assert sample(text, "tiergate_upstream_duration_seconds_count") == 0


def test_scrape_time_gauges_read_live_state() -> None:
    metrics, accountant = make(router=QueueRouter(), target_large_share=0.3, share_window=10)
    open_one = accountant.open("in-flight")
    for tier in ("large", "small", "small", "small"):
        answered(accountant, tier)
    text = metrics.exposition().decode()
    assert sample(text, "tiergate_in_flight_requests") == 1
    assert sample(text, "tiergate_backend_queue_depth", tier="small", backend="local") == 3
    assert sample(text, "tiergate_backend_in_flight_requests", tier="small") == 1
    assert sample(text, "tiergate_classifier_queue_depth") == 7
    assert sample(text, "tiergate_large_share_realised") == pytest.approx(0.25)
    assert sample(text, "tiergate_large_share_target") == pytest.approx(0.3)
    assert sample(text, "tiergate_routing_threshold") == pytest.approx(0.5)
    assert sample(text, "tiergate_build_info", router="fixed-test") == 1
    accountant.finish(open_one)
    assert sample(metrics.exposition().decode(), "tiergate_in_flight_requests") == 0


def test_realised_share_covers_only_the_recent_window() -> None:
    metrics, accountant = make(share_window=10)
    for _ in range(10):
        answered(accountant, "large")
    for _ in range(10):
        answered(accountant, "small")
    assert metrics.realised_share() == 0.0


def test_histogram_buckets_are_less_than_or_equal() -> None:
    histogram = build(Spec("x_seconds", "histogram", (), "doc", (0.1, 1.0)))
    for value in (0.1, 0.5, 1.0, 5.0):
        histogram.observe(value)
    [family] = collected([histogram])
    cumulative = [(s.labels["le"], s.value) for s in family.samples if s.name == "x_seconds_bucket"]
    assert cumulative == [("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)]


def test_recording_an_outcome_is_cheap() -> None:
    metrics, accountant = make()
    outcome = answered(accountant, "small", prompt_tokens=100, completion_tokens=20, stream=True, ttft_seconds=0.01)
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        metrics.record(outcome)
    per_call = (time.perf_counter() - started) / rounds
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per outcome"


class CheckpointRouter(FixedRouter):
    @property
    def checkpoint_id(self) -> str:
        return "ckpt-42"


def test_build_info_names_the_routers_own_checkpoint_else_none() -> None:
    named, _ = make(router=CheckpointRouter())
    assert sample(named.exposition().decode(), "tiergate_build_info", classifier_checkpoint="ckpt-42") == 1
    plain, _ = make()
    text = plain.exposition().decode()
    assert sample(text, "tiergate_build_info", router="fixed-test", classifier_checkpoint="none") == 1
    assert "\ntiergate_classifier_queue_depth " not in text  # a router without a batcher reports no depth


def test_no_family_exposes_a_created_series() -> None:
    metrics, accountant = make()
    keys = KeyMetrics(["alice"])
    metrics.registry.register(keys)
    answered(accountant, "small", prompt_tokens=10, completion_tokens=5)
    keys.failure("limiter")
    text = metrics.exposition().decode()
    assert "_created" not in text
    assert {"tiergate_key_requests_total", "tiergate_shared_state_failures_total"} <= set(families(text))


def test_key_metrics_label_unknown_names_other_and_count_cost_only_when_priced() -> None:
    metrics, accountant = make()
    keys = KeyMetrics(["alice"])
    metrics.registry.register(keys)
    accountant.sinks.append(keys)
    for name in ("alice", "alice", "mallory"):
        outcome = accountant.open("r")
        outcome.principal = Principal(name)
        accountant.finish(outcome)  # no usage: priced at 0
    text = metrics.exposition().decode()
    assert sample(text, "tiergate_key_requests_total", key="alice") == 2
    assert sample(text, "tiergate_key_requests_total", key="other") == 1
    assert 'key="mallory"' not in text
    assert "tiergate_key_cost_usd_total{" not in text  # nothing priced yet: no series


def test_learning_counters_count_in_the_apps_families_or_on_their_own() -> None:
    metrics, _ = make()
    bound = LearningMetrics(metrics.families)
    bound.shadow["answered"].inc()
    bound.spend["judge"].inc(0.25)
    text = metrics.exposition().decode()
    assert sample(text, "tiergate_shadow_requests_total", outcome="answered") == 1
    assert sample(text, "tiergate_learning_spend_usd_total", purpose="judge") == 0.25
    assert bound.snapshot()["spend"] == {"shadow": 0.0, "judge": 0.25}
    alone = LearningMetrics()
    alone.verdicts["large_better"].inc(2)
    assert alone.snapshot()["verdicts"] == {"small_as_good": 0.0, "large_better": 2.0}
    assert sample(metrics.exposition().decode(), "tiergate_judge_verdicts_total") == 0  # exported nowhere
