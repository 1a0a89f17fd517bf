"""Prometheus export: every ``tiergate_`` family in the app's own registry, fed once per request by a sink."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any, get_args

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import Response

from gateway.accounting import OUTCOMES, Accountant, RequestOutcome
from gateway.decisions import RouteDecider
from gateway.telemetry.catalog import FAMILIES, SPECS
from gateway.telemetry.family import CounterChild, Family, HistogramChild, gauge
from routers.base import TIERS, Reason

NONE = "none"  # label value for "not known": a request rejected before a tier was chosen
REASONS: tuple[str, ...] = get_args(Reason)


class TierSeries:
    """The children one answering tier writes, bound once so a request costs no label lookups."""

    __slots__ = (
        "_m",
        "_tier",
        "backend",
        "cached",
        "completion",
        "cost",
        "counterfactual",
        "duration",
        "errors",
        "fallbacks",
        "model",
        "prompt",
        "requests",
        "retries",
        "saved",
        "ttft",
        "upstream",
    )

    def __init__(self, m: GatewayMetrics, tier: str, backend: str, model: str) -> None:
        self._m, self._tier, self.backend, self.model = m, tier, backend, model
        f = m.families
        self.requests = {o: (f["tiergate_requests_total"].counter(tier, backend, o, "false"),
                             f["tiergate_requests_total"].counter(tier, backend, o, "true")) for o in OUTCOMES}
        self.duration = (f["tiergate_request_duration_seconds"].histogram(tier, "false"),
                         f["tiergate_request_duration_seconds"].histogram(tier, "true"))
        self.ttft = f["tiergate_time_to_first_token_seconds"].histogram(tier)
        self.upstream = f["tiergate_upstream_duration_seconds"].histogram(tier, backend)
        self.prompt = f["tiergate_prompt_tokens_total"].counter(tier, model)
        self.cached = f["tiergate_cached_prompt_tokens_total"].counter(tier, model)
        self.completion = f["tiergate_completion_tokens_total"].counter(tier, model)
        self.cost = f["tiergate_cost_usd_total"].counter(tier, model)
        self.counterfactual = f["tiergate_counterfactual_cost_usd_total"].counter(tier)
        self.saved = f["tiergate_saved_usd_total"].counter(tier)
        self.retries = f["tiergate_retries_total"].counter(tier, backend)
        self.fallbacks = f["tiergate_fallbacks_total"].counter(tier)
        self.errors: dict[str, CounterChild] = {}

    def request(self, outcome: str, stream: bool) -> CounterChild:
        pair = self.requests.get(outcome)
        if pair is None:  # an outcome value added elsewhere: bind it on first use
            family = self._m.families["tiergate_requests_total"]
            pair = self.requests[outcome] = (family.counter(self._tier, self.backend, outcome, "false"),
                                             family.counter(self._tier, self.backend, outcome, "true"))
        return pair[stream]

    def error(self, kind: str) -> CounterChild:
        child = self.errors.get(kind)
        if child is None:
            child = self.errors[kind] = self._m.families["tiergate_upstream_errors_total"].counter(
                self._tier, self.backend, kind)
        return child


class GatewayMetrics:
    """Owns a fresh ``CollectorRegistry`` holding every family; an ``OutcomeSink`` for the accountant."""

    def __init__(self, service: RouteDecider, accountant: Accountant | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.accountant = accountant
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.families = {s.name: Family(s.name, s.help, s.kind, s.labels, s.buckets)
                         for s in FAMILIES if s.kind != "gauge"}
        self.routing_duration: HistogramChild = self.families["tiergate_routing_duration_seconds"].histogram()
        self.score: HistogramChild = self.families["tiergate_routing_score"].histogram()
        decisions = self.families["tiergate_routing_decisions_total"]
        self.decisions = {t: {r: decisions.counter(t, r) for r in REASONS} for t in TIERS}
        self.tiers: dict[str | None, TierSeries] = {
            tier: TierSeries(self, tier, backend.name, backend.model) for tier, backend in service.backends.items()}
        # The realised large share over the last share_window routed requests (when no controller keeps one).
        self._window = [0] * service.routing.share_window
        self._window_pos = 0
        self._window_seen = 0
        self._window_large = 0
        self.registry.register(self)

    def record(self, outcome: RequestOutcome) -> None:
        series = self.tiers.get(outcome.tier)
        if series is None or series.backend != outcome.backend or series.model != outcome.model:
            series = self._series(outcome)
        series.request(outcome.outcome, outcome.stream).inc()
        series.duration[outcome.stream].observe(outcome.duration_seconds)
        if outcome.backend is not None:
            series.upstream.observe(outcome.upstream_seconds)
        if outcome.ttft_seconds is not None:
            series.ttft.observe(outcome.ttft_seconds)
        if outcome.prompt_tokens or outcome.completion_tokens:
            series.prompt.inc(outcome.prompt_tokens)
            series.completion.inc(outcome.completion_tokens)
            series.cached.inc(outcome.cached_prompt_tokens)
            series.cost.inc(outcome.cost_usd)
            series.counterfactual.inc(outcome.counterfactual_cost_usd)
            if outcome.counterfactual_cost_usd > outcome.cost_usd:
                series.saved.inc(outcome.counterfactual_cost_usd - outcome.cost_usd)
        if outcome.error_kind is not None:
            series.error(outcome.error_kind).inc()
        if outcome.retries:
            series.retries.inc(outcome.retries)
        if outcome.fallback:
            series.fallbacks.inc()
        if outcome.routing_seconds:
            self.routing_duration.observe(outcome.routing_seconds)
        decision = outcome.decision
        if decision is not None:
            by_reason = self.decisions.get(decision.tier)
            child = by_reason.get(decision.reason) if by_reason is not None else None
            if child is None:
                child = self.families["tiergate_routing_decisions_total"].counter(decision.tier, decision.reason)
            child.inc()
            if decision.score is not None:
                self.score.observe(decision.score)
            if decision.reason != "explicit_model":
                self._observe_share(decision.tier == "large")

    def _series(self, outcome: RequestOutcome) -> TierSeries:
        key = f"{outcome.tier}|{outcome.backend}|{outcome.model}"
        series = self.tiers.get(key)
        if series is None:
            series = self.tiers[key] = TierSeries(self, outcome.tier or NONE, outcome.backend or NONE,
                                                  outcome.model or NONE)
        return series

    def _observe_share(self, large: bool) -> None:
        window = self._window
        self._window_large += int(large) - window[self._window_pos]
        window[self._window_pos] = int(large)
        self._window_pos = (self._window_pos + 1) % len(window)
        self._window_seen += 1

    def realised_share(self) -> float | None:
        controller = self.service.share_controller
        if controller is not None and hasattr(controller, "realised_share"):
            value = controller.realised_share()
            return None if value is None else float(value)
        if not self._window_seen:
            return None
        return self._window_large / min(self._window_seen, len(self._window))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in self.families.values():
            yield family.metric()
        yield from self._live()

    def _live(self) -> Iterator[Metric]:
        service = self.service
        in_flight = self.accountant.in_flight if self.accountant is not None else 0
        yield gauge("tiergate_in_flight_requests", SPECS["tiergate_in_flight_requests"].help, iter([((), in_flight)]))
        local = [(tier, b) for tier, b in service.backends.items() if hasattr(b, "queue_depth")]
        for name, method in (("tiergate_backend_queue_depth", "queue_depth"),
                             ("tiergate_backend_in_flight_requests", "in_flight")):
            samples = [((tier, b.name), float(getattr(b, method)())) for tier, b in local if hasattr(b, method)]
            yield gauge(name, SPECS[name].help, iter(samples), ("tier", "backend"))
        depth = getattr(service.router, "queue_depth", None)
        yield gauge("tiergate_classifier_queue_depth", SPECS["tiergate_classifier_queue_depth"].help,
                    iter([((), float(depth()))] if callable(depth) else []))
        share = self.realised_share()
        yield gauge("tiergate_large_share_realised", SPECS["tiergate_large_share_realised"].help,
                    iter([] if share is None else [((), share)]))
        target = service.routing.target_large_share
        yield gauge("tiergate_large_share_target", SPECS["tiergate_large_share_target"].help,
                    iter([] if target is None else [((), target)]))
        yield gauge("tiergate_routing_threshold", SPECS["tiergate_routing_threshold"].help,
                    iter([((), service.base_threshold())]))
        labels = ("version", "router", "classifier_checkpoint")
        yield gauge("tiergate_build_info", SPECS["tiergate_build_info"].help,
                    iter([((version(), service.router.name, checkpoint_id(service)), 1.0)]), labels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def version() -> str:
    try:
        return metadata.version("tiergate")
    except metadata.PackageNotFoundError:
        return "unknown"


def checkpoint_id(service: RouteDecider) -> str:
    """The router's own ``checkpoint_id`` when it has one, else the configured classifier path."""
    value: Any = getattr(service.router, "checkpoint_id", None)
    if callable(value):
        value = value()
    if value:
        return str(value)
    return service.routing.classifier.path if service.router.name == "classifier" else NONE


def metrics_api(metrics: GatewayMetrics) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format."""
    api = APIRouter()

    @api.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return api
