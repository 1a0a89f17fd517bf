"""The learning loop's counters, bound once from the gateway's metric families (gateway.telemetry.catalog)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from gateway.telemetry.catalog import SPECS, counter, value

SHADOW_OUTCOMES = ("answered", "failed", "timeout", "dropped", "busy", "over_budget")
VERDICTS = ("small_as_good", "large_better")
JUDGE_FAILURES = ("error", "timeout", "garbage", "over_budget")
STORED = ("request", "shadow", "verdict", "feedback")
STORE_ERRORS = ("write_failed", "dropped")

Families = Mapping[str, Counter]  # the app's counters by family name (``GatewayMetrics.families``)


class LearningMetrics:
    """Counters for shadow calls, judge verdicts and failures, spend, and label store writes.

    ``families`` are the app's counters (``GatewayMetrics.families``); without them (unit tests) each
    family is a counter of its own that no registry exports.
    """

    def __init__(self, families: Families | None = None) -> None:
        def bind(name: str, values: tuple[str, ...]) -> dict[str, Counter]:
            family = families.get(name) if families is not None else None
            if family is None:
                spec = SPECS[name]
                family = counter(name, spec.help, spec.labels)
            return {v: family.labels(v) for v in values}

        self.shadow = bind("tiergate_shadow_requests_total", SHADOW_OUTCOMES)
        self.verdicts = bind("tiergate_judge_verdicts_total", VERDICTS)
        self.judge_failures = bind("tiergate_judge_failures_total", JUDGE_FAILURES)
        self.spend = bind("tiergate_learning_spend_usd_total", ("shadow", "judge"))
        self.stored = bind("tiergate_labels_stored_total", STORED)
        self.store_errors = bind("tiergate_label_store_errors_total", STORE_ERRORS)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every counter's value (tests, logs)."""
        return {name: {k: value(c) for k, c in group.items()} for name, group in (
            ("shadow", self.shadow), ("verdicts", self.verdicts), ("judge_failures", self.judge_failures),
            ("spend", self.spend), ("stored", self.stored), ("store_errors", self.store_errors))}
