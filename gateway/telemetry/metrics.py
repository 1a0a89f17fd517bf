"""Prometheus export: every ``tiergate_`` family in the app's own registry, fed once per request by a sink."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Protocol, get_args

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import Response

from gateway.accounting import OUTCOMES, Accountant, RequestOutcome
from gateway.backends.base import Backend, QueuedBackend
from gateway.telemetry.catalog import FAMILIES, SPECS, build, collected
from routers.base import TIERS, Reason, Router, Tier
from routers.capabilities import Checkpointed, QueueReporter
from routers.threshold import ShareWindow

if TYPE_CHECKING:
    from gateway.settings import RoutingSettings
    from routers.threshold import ShareController

NONE = "none"  # label value for "not known": a request rejected before a tier was chosen
# The families this module's record() writes: only ever from the event loop (Accountant.finish), so lock-free.
RECORDED = frozenset({
    "tiergate_requests_total", "tiergate_request_duration_seconds", "tiergate_time_to_first_token_seconds",
    "tiergate_routing_duration_seconds", "tiergate_upstream_duration_seconds", "tiergate_routing_score",
    "tiergate_routing_decisions_total", "tiergate_prompt_tokens_total", "tiergate_cached_prompt_tokens_total",
    "tiergate_completion_tokens_total", "tiergate_cost_usd_total", "tiergate_counterfactual_cost_usd_total",
    "tiergate_saved_usd_total", "tiergate_upstream_errors_total", "tiergate_retries_total",
    "tiergate_fallbacks_total"})
REASONS: tuple[str, ...] = get_args(Reason)


class RoutingView(Protocol):
    """What the metrics read from the chat service at scrape time (``gateway.service.ChatService`` is one)."""

    @property
    def backends(self) -> Mapping[Tier, Backend]: ...

    @property
    def router(self) -> Router: ...

    @property
    def routing(self) -> RoutingSettings: ...

    @property
    def share_controller(self) -> ShareController | None: ...

    def base_threshold(self) -> float: ...


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
        c, h = m.counters, m.histograms
        self.requests = {o: self._request_pair(o) for o in OUTCOMES}
        self.duration = (h["tiergate_request_duration_seconds"].labels(tier, "false"),
                         h["tiergate_request_duration_seconds"].labels(tier, "true"))
        self.ttft = h["tiergate_time_to_first_token_seconds"].labels(tier)
        self.upstream = h["tiergate_upstream_duration_seconds"].labels(tier, backend)
        self.prompt = c["tiergate_prompt_tokens_total"].labels(tier, model)
        self.cached = c["tiergate_cached_prompt_tokens_total"].labels(tier, model)
        self.completion = c["tiergate_completion_tokens_total"].labels(tier, model)
        self.cost = c["tiergate_cost_usd_total"].labels(tier, model)
        self.counterfactual = c["tiergate_counterfactual_cost_usd_total"].labels(tier)
        self.saved = c["tiergate_saved_usd_total"].labels(tier)
        self.retries = c["tiergate_retries_total"].labels(tier, backend)
        self.fallbacks = c["tiergate_fallbacks_total"].labels(tier)
        self.errors: dict[str, Counter] = {}

    def _request_pair(self, outcome: str) -> tuple[Counter, Counter]:
        family = self._m.counters["tiergate_requests_total"]
        return (family.labels(self._tier, self.backend, outcome, "false"),
                family.labels(self._tier, self.backend, outcome, "true"))

    def request(self, outcome: str, stream: bool) -> Counter:
        pair = self.requests.get(outcome)
        if pair is None:  # an outcome value added elsewhere: bind it on first use
            pair = self.requests[outcome] = self._request_pair(outcome)
        return pair[stream]

    def error(self, kind: str) -> Counter:
        child = self.errors.get(kind)
        if child is None:
            child = self.errors[kind] = self._m.counters["tiergate_upstream_errors_total"].labels(
                self._tier, self.backend, kind)
        return child


class GatewayMetrics:
    """Owns the app's ``CollectorRegistry`` holding every family; an ``OutcomeSink`` for the accountant.

    The counters and histograms are prometheus_client objects registered nowhere else: this collector
    yields them (without their ``_created`` series) and computes the gauges when scraped.
    """

    def __init__(self, service: RoutingView, accountant: Accountant | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.accountant = accountant
        self.registry = registry or CollectorRegistry(auto_describe=False)
        built = {spec.name: build(spec, loop_only=spec.name in RECORDED) for spec in FAMILIES if spec.kind != "gauge"}
        self._ordered = list(built.values())  # the catalogue's order is the exposition's
        self.counters: dict[str, Counter] = {n: m for n, m in built.items() if isinstance(m, Counter)}
        self.histograms: dict[str, Histogram] = {n: m for n, m in built.items() if isinstance(m, Histogram)}
        self.routing_duration = self.histograms["tiergate_routing_duration_seconds"]
        self.score = self.histograms["tiergate_routing_score"]
        decisions = self.counters["tiergate_routing_decisions_total"]
        self.decisions = {t: {r: decisions.labels(t, r) for r in REASONS} for t in TIERS}
        self.tiers: dict[str | None, TierSeries] = {
            tier: TierSeries(self, tier, backend.name, backend.model) for tier, backend in service.backends.items()}
        # The realised large share over the last share_window routed requests (when no controller keeps one).
        self._window = ShareWindow(service.routing.share_window)
        self.registry.register(self)

    @property
    def families(self) -> Mapping[str, Counter]:
        """The counter families by name: the learning loop binds its counters from these."""
        return self.counters

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
        # Zero increments are skipped: each costs a lock (the children exist already, so nothing else changes).
        if outcome.prompt_tokens or outcome.completion_tokens:
            series.prompt.inc(outcome.prompt_tokens)
            series.completion.inc(outcome.completion_tokens)
            if outcome.cached_prompt_tokens:
                series.cached.inc(outcome.cached_prompt_tokens)
            if outcome.cost_usd:
                series.cost.inc(outcome.cost_usd)
            if outcome.counterfactual_cost_usd:
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
                child = self.counters["tiergate_routing_decisions_total"].labels(decision.tier, decision.reason)
            child.inc()
            if decision.score is not None:
                self.score.observe(decision.score)
            if decision.reason != "explicit_model":
                self._window.add(decision.tier == "large")

    def _series(self, outcome: RequestOutcome) -> TierSeries:
        key = f"{outcome.tier}|{outcome.backend}|{outcome.model}"
        series = self.tiers.get(key)
        if series is None:
            series = self.tiers[key] = TierSeries(self, outcome.tier or NONE, outcome.backend or NONE,
                                                  outcome.model or NONE)
        return series

    def realised_share(self) -> float | None:
        controller = self.service.share_controller
        if controller is not None:
            return float(controller.realised_share())
        return self._window.share()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from collected(self._ordered)
        yield from self._live()

    def _live(self) -> Iterator[Metric]:
        service = self.service
        in_flight = self.accountant.in_flight if self.accountant is not None else 0
        yield gauge("tiergate_in_flight_requests", [((), in_flight)])
        local = [(tier, b) for tier, b in service.backends.items() if isinstance(b, QueuedBackend)]
        yield gauge("tiergate_backend_queue_depth", [((tier, b.name), b.queue_depth()) for tier, b in local])
        yield gauge("tiergate_backend_in_flight_requests", [((tier, b.name), b.in_flight()) for tier, b in local])
        router = service.router
        yield gauge("tiergate_classifier_queue_depth",
                    [((), router.queue_depth())] if isinstance(router, QueueReporter) else [])
        share = self.realised_share()
        yield gauge("tiergate_large_share_realised", [] if share is None else [((), share)])
        target = service.routing.target_large_share
        yield gauge("tiergate_large_share_target", [] if target is None else [((), target)])
        yield gauge("tiergate_routing_threshold", [((), service.base_threshold())])
        yield gauge("tiergate_build_info", [((version(), router.name, checkpoint_id(service)), 1.0)])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def gauge(name: str, samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    """The catalogued gauge ``name`` (help and labels from ``SPECS``) with the samples read now."""
    spec = SPECS[name]
    family = GaugeMetricFamily(name, spec.help, labels=list(spec.labels))
    for labels, value in samples:
        family.add_metric(list(labels), float(value))
    return family


def version() -> str:
    try:
        return metadata.version("tiergate")
    except metadata.PackageNotFoundError:
        return "unknown"


def checkpoint_id(service: RoutingView) -> str:
    """The router's own ``checkpoint_id`` when it has one, else the configured classifier path."""
    router = service.router
    if isinstance(router, Checkpointed) and router.checkpoint_id:
        return router.checkpoint_id
    return service.routing.classifier.path if router.name == "classifier" else NONE


def metrics_api(metrics: GatewayMetrics) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format."""
    api = APIRouter()

    @api.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return api
