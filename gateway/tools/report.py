"""``tiergate report``: cost, savings and latency per day from the request log (or a /metrics scrape), and a
monthly bill projected for all-large, all-small and the measured routing mix."""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from gateway.pricing import PriceTable
from gateway.settings import Settings, load_settings


@dataclass
class Period:
    """Totals of one day (or, from a scrape, of the process lifetime)."""

    label: str
    tiers: Counter[str] = field(default_factory=Counter)
    cost: float = 0.0
    counterfactual: float = 0.0
    small_cost: float = 0.0  # the same usage priced on the small tier's model
    durations: list[float] = field(default_factory=list)
    quantiles: dict[float, float] = field(default_factory=dict)  # precomputed (scrapes)

    @property
    def requests(self) -> int:
        return sum(self.tiers.values())

    @property
    def savings(self) -> float:
        return self.counterfactual - self.cost

    def quantile(self, q: float) -> float:
        if q in self.quantiles:
            return self.quantiles[q]
        if not self.durations:
            return math.nan
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def read_log(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], int]:
    """The records of JSONL request logs, and how many lines could not be read."""
    records: list[dict[str, Any]] = []
    bad = 0
    for path in paths:
        for line in path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            elif line.strip():
                bad += 1
    return records, bad


def small_model(settings: Settings | None, records: list[dict[str, Any]]) -> str | None:
    if settings is not None and "small" in settings.tiers:
        return settings.tiers["small"].model
    seen = Counter(r.get("model") for r in records if r.get("tier") == "small" and r.get("model"))
    return str(seen.most_common(1)[0][0]) if seen else None


def days_from_log(records: list[dict[str, Any]], prices: PriceTable, small: str | None) -> list[Period]:
    days: dict[str, Period] = {}
    for r in records:
        day = str(r.get("time", ""))[:10] or "unknown"
        period = days.setdefault(day, Period(day))
        period.tiers[str(r.get("tier") or "none")] += 1
        period.cost += float(r.get("cost_usd") or 0.0)
        period.counterfactual += float(r.get("counterfactual_cost_usd") or 0.0)
        period.small_cost += prices.cost(small, int(r.get("prompt_tokens") or 0), int(r.get("completion_tokens") or 0),
                                         int(r.get("cached_prompt_tokens") or 0))
        if r.get("duration_seconds") is not None:
            period.durations.append(float(r["duration_seconds"]))
    return [days[d] for d in sorted(days)]


def period_from_metrics(text: str, prices: PriceTable, small: str | None) -> Period:
    """One period covering the gateway process's lifetime, from the Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    period = Period("since start")
    tokens: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tiergate_requests_total":
                period.tiers[s.labels.get("tier", "none")] += int(s.value)
            elif s.name == "tiergate_cost_usd_total":
                period.cost += s.value
                if small is None and s.labels.get("tier") == "small":
                    small = s.labels.get("model")
            elif s.name == "tiergate_counterfactual_cost_usd_total":
                period.counterfactual += s.value
            elif s.name in ("tiergate_prompt_tokens_total", "tiergate_completion_tokens_total",
                            "tiergate_cached_prompt_tokens_total"):
                tokens[s.name] += s.value
            elif s.name == "tiergate_request_duration_seconds_bucket":
                buckets[float(s.labels["le"])] += s.value
    period.small_cost = prices.cost(small, int(tokens["tiergate_prompt_tokens_total"]),
                                    int(tokens["tiergate_completion_tokens_total"]),
                                    int(tokens["tiergate_cached_prompt_tokens_total"]))
    for q in (0.5, 0.95, 0.99):
        period.quantiles[q] = bucket_quantile(q, sorted(buckets.items()))
    return period


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` on cumulative ``(le, count)`` pairs: linear within the bucket."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = upper, count
    return lower


def render(periods: list[Period], out: TextIO) -> None:
    head = (f"{'day':<12}{'requests':>9}{'small':>8}{'large':>8}{'cost $':>12}{'all-large $':>13}"
            f"{'saved $':>12}{'saved':>7}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}")
    print(head, file=out)
    total = Period("total")
    for p in periods:
        _row(p, out)
        total.tiers.update(p.tiers)
        total.cost += p.cost
        total.counterfactual += p.counterfactual
        total.small_cost += p.small_cost
        total.durations.extend(p.durations)
    if len(periods) > 1:
        _row(total, out)


def _row(p: Period, out: TextIO) -> None:
    share = f"{p.savings / p.counterfactual:.0%}" if p.counterfactual else "-"
    print(f"{p.label:<12}{p.requests:>9}{p.tiers['small']:>8}{p.tiers['large']:>8}{p.cost:>12.4f}"
          f"{p.counterfactual:>13.4f}{p.savings:>12.4f}{share:>7}"
          f"{p.quantile(0.5):>8.3f}{p.quantile(0.95):>8.3f}{p.quantile(0.99):>8.3f}", file=out)


def projection(periods: list[Period], monthly_requests: int) -> dict[str, float]:
    """Monthly USD at ``monthly_requests`` requests, from the measured cost per request of each policy."""
    requests = sum(p.requests for p in periods)
    if not requests:
        return {}
    per = monthly_requests / requests
    return {"all-large": sum(p.counterfactual for p in periods) * per,
            "all-small": sum(p.small_cost for p in periods) * per,
            "current mix": sum(p.cost for p in periods) * per}


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = load_settings(args.config) if args.config else None
    # Without a profile: the shipped config/prices.yaml.
    prices = PriceTable.from_settings(settings if settings is not None else Settings(tiers={}))
    try:
        periods = _read_periods(args, settings, prices)
    except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
        print(f"tiergate report: {exc}", file=sys.stderr)
        return 2
    if not periods or not any(p.requests for p in periods):
        print("no requests found", file=out)
        return 1
    render(periods, out)
    if args.monthly_requests:
        print(f"\nprojected monthly bill at {args.monthly_requests:,} requests (measured mix of "
              f"{sum(p.requests for p in periods):,} requests):", file=out)
        for policy, usd in projection(periods, args.monthly_requests).items():
            print(f"  {policy:<12} ${usd:,.2f}", file=out)
    return 0


def _read_periods(args: argparse.Namespace, settings: Settings | None, prices: PriceTable) -> list[Period]:
    if args.metrics_url:
        from urllib.request import urlopen

        try:
            with urlopen(args.metrics_url, timeout=10) as answer:  # an HTTP error status raises HTTPError
                text = answer.read().decode("utf-8")
        except OSError as exc:
            raise OSError(f"cannot scrape {args.metrics_url}: {exc}") from None
        return [period_from_metrics(text, prices, small_model(settings, []))]
    records, bad = read_log(Path(p) for p in args.log)
    if bad:
        print(f"skipped {bad} unreadable line(s)", file=sys.stderr)
    return days_from_log(records, prices, small_model(settings, records))


def add_commands(subparsers: Any) -> None:
    """Registers ``tiergate report`` (gateway.cli calls this)."""
    report = subparsers.add_parser("report", help="cost, savings and latency per day; projected monthly bill")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", nargs="+", metavar="JSONL", help="request log file(s) (request_log.path)")
    source.add_argument("--metrics-url", help="scrape a running gateway instead, e.g. http://127.0.0.1:8000/metrics")
    report.add_argument("--config", help="the gateway's YAML profile: its prices and tier models")
    report.add_argument("--monthly-requests", type=int, metavar="N",
                        help="project the monthly bill at N requests for all-large, all-small and the current mix")
    report.set_defaults(func=run_report)
