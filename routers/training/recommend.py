"""``tiergate recommend``: from the quality-vs-share curve on a deployment's labels and the price table, the
cheapest operating point that keeps the quality asked for, and a plain verdict: all-small, hybrid, all-large."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from routers.threshold import threshold_for_share
from routers.training.data import DataError, Example
from routers.training.evaluate import curve

PER_TOKEN = 1e-6  # price files give USD per 1M tokens
CHARS_PER_TOKEN = 4.0  # prompt tokens estimated from characters when a row does not say
TABLE_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
Verdict = Literal["all-small", "hybrid", "all-large"]


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per 1M prompt and completion tokens of one model."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) * PER_TOKEN


def read_prices(path: str | Path) -> dict[str, TokenPrice]:
    """``model -> {prompt, completion}`` from a price file (``config/prices.yaml`` format)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"price file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("prices"), dict):
        data = data["prices"]
    try:
        return {str(m): TokenPrice(float(p["prompt"]), float(p["completion"])) for m, p in dict(data).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"price file {path}: every model needs prompt and completion prices ({exc})") from None


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """One threshold: who goes large, the quality kept, and what it costs."""

    threshold: float
    large_share: float
    quality: float  # mean quality at this point
    quality_vs_large: float  # quality / all-large quality
    cost_per_1k: float  # USD per 1,000 requests
    monthly_cost: float
    monthly_savings: float  # against sending everything large


@dataclass(frozen=True, slots=True)
class Recommendation:
    points: list[OperatingPoint]
    chosen: OperatingPoint
    verdict: Verdict
    reason: str
    min_quality: float
    monthly_requests: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points": [asdict(p) for p in self.points], "chosen": asdict(self.chosen)}


def operating_points(
    scores: Sequence[float],
    examples: Sequence[Example],
    small_cost: Sequence[float],
    large_cost: Sequence[float],
    monthly_requests: int,
) -> list[OperatingPoint]:
    """Every large share ``k / n`` (the ``k`` highest scores go large), with quality and cost."""
    s = np.asarray(scores, dtype=np.float64)
    sweep = curve("router", s, [e.small for e in examples], [e.large for e in examples])
    n = len(s)
    order = np.argsort(-s, kind="stable")
    extra = np.concatenate([[0.0], np.cumsum((np.asarray(large_cost) - np.asarray(small_cost))[order])])
    per_request = (float(np.sum(small_cost)) + extra) / n
    top_quality = float(sweep.quality[-1]) or 1e-12
    full = per_request[-1] * monthly_requests
    points = []
    for k in range(n + 1):
        monthly = float(per_request[k] * monthly_requests)
        points.append(
            OperatingPoint(
                threshold=round(threshold_for_share(list(s), k / n), 6),
                large_share=k / n,
                quality=float(sweep.quality[k]),
                quality_vs_large=float(sweep.quality[k]) / top_quality,
                cost_per_1k=float(per_request[k] * 1000),
                monthly_cost=monthly,
                monthly_savings=float(full - monthly),
            )
        )
    return points


def recommend(
    points: Sequence[OperatingPoint], min_quality: float, monthly_requests: int, min_savings: float = 0.05
) -> Recommendation:
    """The cheapest point whose quality vs all-large reaches ``min_quality``, and the verdict it implies.

    A hybrid that saves less than ``min_savings`` of the all-large bill is not worth a router: all-large.
    """
    meeting = [p for p in points if p.quality_vs_large >= min_quality - 1e-12]
    all_small, all_large = points[0], points[-1]
    chosen = min(meeting, key=lambda p: (p.cost_per_1k, p.large_share)) if meeting else all_large
    saving = chosen.monthly_savings / all_large.monthly_cost if all_large.monthly_cost else 0.0
    verdict: Verdict
    if chosen.large_share == 0.0:
        verdict = "all-small"
        reason = (
            f"all-small keeps {all_small.quality_vs_large:.1%} of all-large quality (>= {min_quality:.0%}) and "
            f"saves {saving:.0%} (${chosen.monthly_savings:,.2f} a month)"
        )
    elif chosen is all_large or saving < min_savings:
        chosen, verdict = all_large, "all-large"
        reason = (
            f"no cheaper point keeps {min_quality:.0%} of all-large quality with a saving of at least "
            f"{min_savings:.0%} (all-small keeps {all_small.quality_vs_large:.1%})"
        )
    else:
        verdict = "hybrid"
        reason = (
            f"threshold {chosen.threshold:.4f} sends {chosen.large_share:.1%} large, keeps "
            f"{chosen.quality_vs_large:.1%} of all-large quality (all-small: {all_small.quality_vs_large:.1%}) "
            f"and saves {saving:.0%} (${chosen.monthly_savings:,.2f} a month)"
        )
    return Recommendation(list(points), chosen, verdict, reason, min_quality, monthly_requests)


def token_counts(rows: Sequence[dict[str, Any]], texts: Sequence[str], completion: float) -> list[tuple[float, float]]:
    """Per row ``(prompt tokens, completion tokens)``: the row's own counts, else estimates."""
    out = []
    for row, text in zip(rows, texts, strict=True):
        prompt = float(row.get("prompt_tokens") or len(text) / CHARS_PER_TOKEN)
        out.append((prompt, float(row.get("completion_tokens") or completion)))
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def format_table(rec: Recommendation, shares: Sequence[float] = TABLE_SHARES) -> str:
    """The operating points at round shares plus the chosen one, as a text table, then the verdict."""
    n = len(rec.points) - 1
    picked = {round(s * n) for s in shares}
    lines = [
        f"{'threshold':>10}{'large':>8}{'quality':>9}{'$/1k req':>10}{'monthly $':>12}{'savings $':>12}",
    ]
    for k, p in enumerate(rec.points):
        if k in picked or p is rec.chosen:
            mark = "  <- cheapest meeting min-quality" if p is rec.chosen else ""
            lines.append(
                f"{p.threshold:>10.4f}{p.large_share:>8.1%}{p.quality_vs_large:>9.1%}{p.cost_per_1k:>10.4f}"
                f"{p.monthly_cost:>12,.2f}{p.monthly_savings:>12,.2f}{mark}"
            )
    lines.append(f"\nverdict: {rec.verdict} — {rec.reason}")
    lines.append(
        f"(quality = vs all-large; {rec.monthly_requests:,} requests a month; min-quality {rec.min_quality:.0%})"
    )
    return "\n".join(lines)


def plot_recommendation(rec: Recommendation, out: Path) -> None:
    """Quality vs large share with the chosen point, and monthly cost on a second axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    shares = [100 * p.large_share for p in rec.points]
    ax.plot(shares, [100 * p.quality_vs_large for p in rec.points], label="quality vs all-large (%)")
    ax.axhline(100 * rec.min_quality, linestyle=":", color="grey", label=f"min-quality {rec.min_quality:.0%}")
    ax.plot([100 * rec.chosen.large_share], [100 * rec.chosen.quality_vs_large], "o", color="red",
            label=f"{rec.verdict} (threshold {rec.chosen.threshold:.3f})")
    ax.set_xlabel("share routed to the large model (%)")
    ax.set_ylabel("quality vs all-large (%)")
    ax.grid(alpha=0.3)
    cost = ax.twinx()
    cost.plot(shares, [p.monthly_cost for p in rec.points], "--", color="green", label="monthly cost ($)")
    cost.set_ylabel("monthly cost (USD)")
    lines = ax.get_legend_handles_labels()
    more = cost.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(out), dpi=110)
