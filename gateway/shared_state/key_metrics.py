"""Per-key spend and budget metrics, and shared-state failures: label values only from configured key names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric

from gateway.accounting import RequestOutcome
from gateway.admission.auth import Principal
from gateway.telemetry.family import Family, gauge

OTHER = "other"


class KeyMetrics:
    """An outcome sink and a collector registered in the app's registry (``GatewayMetrics.registry``)."""

    def __init__(self, key_names: Iterable[str], up: Callable[[], bool] | None = None) -> None:
        self.keys = frozenset(key_names) | {"anonymous"}  # bounded cardinality: configured names only
        self.requests = Family("tiergate_key_requests_total", "Chat requests finished, by API key name.",
                               "counter", ("key",))
        self.cost = Family("tiergate_key_cost_usd_total", "Cost of the answered requests in USD, by API key name.",
                           "counter", ("key",))
        self.budget = Family("tiergate_budget_actions_total",
                             "Requests a spend cap changed: downgraded to the small tier, or refused (429).",
                             "counter", ("key", "action"))
        self.failures = Family("tiergate_shared_state_failures_total",
                               "Shared-state (Redis) operations that failed, timed out or met an open breaker; "
                               "each was served from local state (fail_open) or refused (fail_closed).",
                               "counter", ("operation",))
        self.up = up  # whether the shared state answers now (Redis backend only)

    def label(self, name: str) -> str:
        return name if name in self.keys else OTHER

    def record(self, outcome: RequestOutcome) -> None:
        principal: Principal | None = outcome.principal
        if principal is None:
            return
        key = self.label(principal.name)
        self.requests.counter(key).inc()
        if outcome.cost_usd:
            self.cost.counter(key).inc(outcome.cost_usd)

    def budget_action(self, key: str, action: str) -> None:
        self.budget.counter(self.label(key), action).inc()

    def failure(self, operation: str) -> None:
        self.failures.counter(operation).inc()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in (self.requests, self.cost, self.budget, self.failures):
            yield family.metric()
        if self.up is not None:
            yield gauge("tiergate_shared_state_up", "1 while the shared-state breaker is closed (Redis answers).",
                        iter([((), 1.0 if self.up() else 0.0)]))
