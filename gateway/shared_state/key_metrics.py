"""Per-key spend and budget metrics, and shared-state failures: label values only from configured key names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from gateway.accounting import RequestOutcome
from gateway.admission.auth import Principal
from gateway.telemetry.catalog import collected, counter
from gateway.telemetry.loop_values import LoopCounter

OTHER = "other"


class KeyMetrics:
    """An outcome sink and a collector registered in the app's registry (``GatewayMetrics.registry``)."""

    def __init__(self, key_names: Iterable[str], up: Callable[[], bool] | None = None) -> None:
        self.keys = frozenset(key_names) | {"anonymous"}  # bounded cardinality: configured names only
        # Written by record() only, on the event loop (an accountant sink): lock-free (gateway.telemetry.loop_values).
        self.requests = LoopCounter("tiergate_key_requests_total", "Chat requests finished, by API key name.",
                                    ("key",), registry=None)
        self.cost = LoopCounter("tiergate_key_cost_usd_total",
                                "Cost of the answered requests in USD, by API key name.", ("key",), registry=None)
        self.budget = counter("tiergate_budget_actions_total",
                              "Requests a spend cap changed: downgraded to the small tier, or refused (429).",
                              ("key", "action"))
        self.failures = counter("tiergate_shared_state_failures_total",
                                "Shared-state (Redis) operations that failed, timed out or met an open breaker; "
                                "each was served from local state (fail_open) or refused (fail_closed).",
                                ("operation",))
        self.up = up  # whether the shared state answers now (Redis backend only)
        # Children bound on first use (one per configured name at most), so a request costs no label lookup.
        self._requests: dict[str, Counter] = {}
        self._cost: dict[str, Counter] = {}

    def label(self, name: str) -> str:
        return name if name in self.keys else OTHER

    def record(self, outcome: RequestOutcome) -> None:
        principal: Principal | None = outcome.principal
        if principal is None:
            return
        key = self.label(principal.name)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(key)
        child.inc()
        if outcome.cost_usd:
            child = self._cost.get(key)
            if child is None:
                child = self._cost[key] = self.cost.labels(key)
            child.inc(outcome.cost_usd)

    def budget_action(self, key: str, action: str) -> None:
        self.budget.labels(self.label(key), action).inc()

    def failure(self, operation: str) -> None:
        self.failures.labels(operation).inc()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from collected((self.requests, self.cost, self.budget, self.failures))
        if self.up is not None:
            up = GaugeMetricFamily("tiergate_shared_state_up",
                                   "1 while the shared-state breaker is closed (Redis answers).")
            up.add_metric([], 1.0 if self.up() else 0.0)
            yield up
