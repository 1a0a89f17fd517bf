"""Per-request cost of the metrics sinks: ns to record one finished outcome, and ms to render one scrape.

Run it on two commits to compare implementations side by side (the numbers go in bench/RESULTS.md):

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/metrics_record.py --label new
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from gateway.accounting import Accountant, RequestOutcome
from gateway.admission.auth import PRINCIPAL_KEY, Principal
from gateway.pricing import PriceTable
from gateway.service import ChatService
from gateway.settings import Price, Settings
from gateway.shared_state.key_metrics import KeyMetrics
from gateway.telemetry.metrics import GatewayMetrics
from routers.base import RouteDecision

PRICES = {"gpt-4o-mini": Price(prompt=0.15, completion=0.60, cached_prompt=0.075),
          "gpt-4o": Price(prompt=2.50, completion=10.0, cached_prompt=1.25)}


class Backend:
    def __init__(self, name: str, model: str) -> None:
        self.name, self.model = name, model


class Router:
    name = "always-small"

    async def start(self) -> None: ...

    def ready(self) -> bool:
        return True

    async def score(self, text: str) -> float:
        return 0.0

    async def aclose(self) -> None: ...


def outcomes(accountant: Accountant) -> list[RequestOutcome]:
    """Four typical endings: a JSON answer, a stream, a retried large answer, a request refused before routing."""
    made = []
    for tier, stream, retries, status in (("small", False, 0, 200), ("small", True, 0, 200),
                                          ("large", False, 1, 200), (None, False, 0, 400)):
        outcome = accountant.open("bench")
        outcome.extra[PRINCIPAL_KEY] = Principal("team-a")
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

    settings = Settings(tiers={"small": {"kind": "openai", "model": "gpt-4o-mini"},
                               "large": {"kind": "openai", "model": "gpt-4o"}})
    backends: dict = {"small": Backend("small", "gpt-4o-mini"), "large": Backend("large", "gpt-4o")}  # type: ignore[type-arg]
    service = ChatService(settings, backends, Router())  # type: ignore[arg-type]
    accountant = Accountant(pricer=PriceTable(PRICES, large_model="gpt-4o"))
    metrics = GatewayMetrics(service, accountant)
    keys = KeyMetrics(["team-a", "team-b"])
    metrics.registry.register(keys)
    batch = outcomes(accountant)

    rows = [("GatewayMetrics.record", per_call_ns(metrics.record, batch, args.outcomes, args.repeats)),
            ("KeyMetrics.record", per_call_ns(keys.record, batch, args.outcomes, args.repeats))]
    scrapes = []
    for _ in range(args.repeats * 20):
        started = time.perf_counter_ns()
        body = metrics.exposition()
        scrapes.append((time.perf_counter_ns() - started) / 1e6)
    label = f" [{args.label}]" if args.label else ""
    for name, values in rows:
        print(f"{name}{label}: median {statistics.median(values):.0f} ns/outcome, "
              f"min {min(values):.0f} (n={args.outcomes} x {args.repeats})")
    print(f"exposition{label}: median {statistics.median(scrapes):.2f} ms/scrape, {len(body)} bytes")


if __name__ == "__main__":
    main()
