"""Per-request cost of the metrics sinks: ns to record one finished outcome, and ms to render one scrape.

Runs the gateway's families both ways side by side: lock-free (gateway.telemetry.loop_values, what serving
uses) and prometheus_client's locked classes (the numbers go in bench/RESULTS.md):

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/metrics_record.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

from gateway.accounting import Accountant, RequestOutcome
from gateway.admission.auth import Principal
from gateway.pricing import PriceTable
from gateway.settings import Price, RoutingSettings
from gateway.shared_state.key_metrics import KeyMetrics
from gateway.telemetry import metrics as metrics_module
from gateway.telemetry.metrics import GatewayMetrics
from routers.base import RouteDecision

PRICES = {"gpt-4o-mini": Price(prompt=0.15, completion=0.60, cached_prompt=0.075),
          "gpt-4o": Price(prompt=2.50, completion=10.0, cached_prompt=1.25)}


class Backend:
    def __init__(self, name: str, model: str) -> None:
        self.name, self.model = name, model


class Router:
    name = "always-small"
    reads_text = False
    recommended_threshold = None

    async def start(self) -> None: ...

    def ready(self) -> bool:
        return True

    async def score(self, text: str) -> float:
        return 0.0

    async def aclose(self) -> None: ...


@dataclass
class Service:
    """What the metrics read from the chat service (gateway.telemetry.metrics.RoutingView)."""

    backends: dict[str, Backend]
    router: Router
    routing: RoutingSettings
    share_controller: None = None

    def base_threshold(self) -> float:
        return 0.5


def outcomes(accountant: Accountant) -> list[RequestOutcome]:
    """Four typical endings: a JSON answer, a stream, a retried large answer, a request refused before routing."""
    made = []
    for tier, stream, retries, status in (("small", False, 0, 200), ("small", True, 0, 200),
                                          ("large", False, 1, 200), (None, False, 0, 400)):
        outcome = accountant.open("bench")
        outcome.principal = Principal("team-a")
        outcome.stream, outcome.retries, outcome.status = stream, retries, status
        outcome.duration_seconds = 0.12
        if tier is None:
            outcome.outcome = "client_error"
        else:
            outcome.decision = RouteDecision(tier, "score_above_threshold" if tier == "large"  # type: ignore[arg-type]
                                             else "score_below_threshold", 0.7 if tier == "large" else 0.2, 0.5)
            outcome.tier, outcome.backend = tier, tier
            outcome.model = "gpt-4o" if tier == "large" else "gpt-4o-mini"
            outcome.prompt_tokens, outcome.completion_tokens = 120, 40
            outcome.routing_seconds, outcome.upstream_seconds = 0.002, 0.1
            outcome.ttft_seconds = 0.03 if stream else None
        accountant.finish(outcome)  # priced once here; the loop below calls only the sink
        made.append(outcome)
    return made


def per_call_ns(record: Callable[[RequestOutcome], None], batch: list[RequestOutcome], n: int,
                repeats: int) -> list[float]:
    results = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for i in range(n):
            record(batch[i & 3])
        results.append((time.perf_counter_ns() - started) / n)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=200_000, help="outcomes recorded per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--label", default="", help="a name for this run (e.g. old / new)")
    args = parser.parse_args()

    backends = {"small": Backend("small", "gpt-4o-mini"), "large": Backend("large", "gpt-4o")}
    service = Service(backends, Router(), RoutingSettings())
    accountant = Accountant(pricer=PriceTable(PRICES, large_model="gpt-4o"))
    lock_free = GatewayMetrics(service, accountant)  # type: ignore[arg-type]
    with mock.patch.object(metrics_module, "RECORDED", frozenset()):  # every family with prometheus_client's locks
        locked = GatewayMetrics(service, accountant)  # type: ignore[arg-type]
    keys = KeyMetrics(["team-a", "team-b"])
    lock_free.registry.register(keys)
    batch = outcomes(accountant)

    rows = []
    for _ in range(args.repeats):  # alternated, so both see the same machine
        rows.append(("GatewayMetrics.record, lock-free", per_call_ns(lock_free.record, batch, args.outcomes, 1)))
        rows.append(("GatewayMetrics.record, prometheus_client locks", per_call_ns(locked.record, batch,
                                                                                  args.outcomes, 1)))
    rows.append(("KeyMetrics.record", per_call_ns(keys.record, batch, args.outcomes, args.repeats)))
    merged: dict[str, list[float]] = {}
    for name, values in rows:
        merged.setdefault(name, []).extend(values)
    metrics = lock_free
    scrapes = []
    for _ in range(args.repeats * 20):
        started = time.perf_counter_ns()
        body = metrics.exposition()
        scrapes.append((time.perf_counter_ns() - started) / 1e6)
    label = f" [{args.label}]" if args.label else ""
    for name, values in merged.items():
        print(f"{name}{label}: median {statistics.median(values):.0f} ns/outcome, "
              f"min {min(values):.0f} (n={args.outcomes} x {args.repeats})")
    print(f"exposition{label}: median {statistics.median(scrapes):.2f} ms/scrape, {len(body)} bytes")


if __name__ == "__main__":
    main()
