"""RouteLLM-protocol evaluation: quality vs large share over a threshold sweep, PGR, APGR and CPT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Numbers = Sequence[float] | FloatArray


@dataclass(frozen=True, slots=True)
class Curve:
    """Quality reached when the ``k`` highest-scored prompts go large, for every ``k`` in ``0..n``."""

    name: str
    shares: FloatArray  # k / n
    quality: FloatArray
    pgr: FloatArray

    @property
    def apgr(self) -> float:
        """Mean PGR over the evenly spaced large shares ``0, 1/n, ..., 1`` (random routing: 0.5)."""
        return float(np.mean(self.pgr))

    def cpt(self, target: float) -> float:
        """The smallest large share whose PGR reaches ``target`` (1.0 when never reached)."""
        reached = np.nonzero(self.pgr >= target - 1e-12)[0]
        return float(self.shares[reached[0]]) if reached.size else 1.0


def _expected_gains(scores: FloatArray, gains: FloatArray) -> FloatArray:
    """Cumulative gain of sending the top-k scores large; ties are split evenly (their expected value)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gains = scores[order], gains[order]
    cumulative = np.concatenate([[0.0], np.cumsum(sorted_gains)])
    n = len(scores)
    starts = np.concatenate([[0], np.nonzero(np.diff(sorted_scores))[0] + 1])
    ends = np.concatenate([starts[1:], [n]])
    result = np.empty(n + 1)
    result[0] = 0.0
    for start, end in zip(starts, ends, strict=True):
        group = cumulative[end] - cumulative[start]
        taken = np.arange(1, end - start + 1)
        result[start + 1 : end + 1] = cumulative[start] + group * taken / (end - start)
    return result


def curve(name: str, scores: Numbers, small: Numbers, large: Numbers) -> Curve:
    """The threshold sweep of one router on a dataset with per-prompt small and large quality."""
    s, q_small, q_large = (np.asarray(x, dtype=np.float64) for x in (scores, small, large))
    n = len(s)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    quality = (q_small.sum() + _expected_gains(s, q_large - q_small)) / n
    gap = quality[-1] - quality[0]
    pgr = (quality - quality[0]) / gap if abs(gap) > 1e-12 else np.zeros(n + 1)
    return Curve(name, np.arange(n + 1) / n, quality, pgr)


def random_curve(small: Sequence[float], large: Sequence[float]) -> Curve:
    """Random routing in expectation: quality grows linearly with the large share."""
    n = len(small)
    shares = np.arange(n + 1) / n
    q0, q1 = float(np.mean(small)), float(np.mean(large))
    return Curve("random", shares, q0 + shares * (q1 - q0), shares.copy())


def oracle_curve(small: Sequence[float], large: Sequence[float]) -> Curve:
    """The oracle sends large exactly the prompts where large beats small, most gain first."""
    gains = np.asarray(large, dtype=np.float64) - np.asarray(small, dtype=np.float64)
    return curve("oracle", gains, small, large)


def table(curves: Sequence[Curve], title: str = "") -> str:
    """A plain-text table of APGR, CPT(50%) and CPT(80%) per router."""
    lines = [title] if title else []
    lines.append(f"{'router':<16}{'APGR':>8}{'CPT(50%)':>10}{'CPT(80%)':>10}")
    for c in curves:
        lines.append(f"{c.name:<16}{c.apgr:>8.3f}{c.cpt(0.5):>9.1%}{c.cpt(0.8):>10.1%}")
    return "\n".join(lines)


def summary(c: Curve) -> dict[str, float]:
    return {"apgr": round(c.apgr, 4), "cpt50": round(c.cpt(0.5), 4), "cpt80": round(c.cpt(0.8), 4)}


def plot(groups: Mapping[str, Sequence[Curve]], out: Path) -> None:
    """One panel per dataset: quality against large share for every router."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(groups), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(groups), squeeze=False)[0]
    for ax, (title, curves) in zip(axes, groups.items(), strict=True):
        for c in curves:
            style = "--" if c.name in ("random", "oracle") else "-"
            ax.plot(100 * c.shares, c.quality, style, label=f"{c.name} (APGR {c.apgr:.3f})")
        ax.set_title(title)
        ax.set_xlabel("share routed to the large model (%)")
        ax.set_ylabel("quality")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(out), dpi=110)
