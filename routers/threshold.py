"""Thresholds: the offline threshold for a target large share, and the online share controller."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from routers.base import DEFAULT_THRESHOLD


def threshold_for_share(scores: Sequence[float], share: float) -> float:
    """The threshold at which ``score >= threshold`` sends ``share`` of these scores to the large tier.

    It lies midway between the k-th and (k+1)-th highest score (k = round(share * n)), so small score
    drift does not flip the boundary prompts; ties at the boundary all go large.
    """
    if not scores:
        raise ValueError("no scores to calibrate on")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    ordered = sorted(scores, reverse=True)
    k = round(share * len(ordered))
    if k == 0:
        return min(1.0, math.nextafter(ordered[0], math.inf))
    if k == len(ordered):
        return max(0.0, ordered[-1])
    return (ordered[k - 1] + ordered[k]) / 2.0


def realised_share(scores: Sequence[float], threshold: float) -> float:
    """Share of ``scores`` that ``threshold`` sends large."""
    return sum(1 for s in scores if s >= threshold) / len(scores) if scores else 0.0


GAIN = 30.0


class ShareWindow:
    """Which of the last ``size`` routed requests went large: the realised large share, kept in O(1) per request."""

    def __init__(self, size: int, decisions: Iterable[bool] = ()) -> None:
        self.decisions: deque[bool] = deque(decisions, maxlen=size)
        self.large = sum(self.decisions)

    def add(self, large: bool) -> None:
        if len(self.decisions) == self.decisions.maxlen:
            self.large -= self.decisions[0]
        self.decisions.append(large)
        self.large += large

    def share(self) -> float | None:
        """Share of the window that went large; None before any request."""
        return self.large / len(self.decisions) if self.decisions else None


class ShareController:
    """Keeps the share of recent requests sent large near ``target`` by tracking the score quantile.

    The threshold is a quantile of the most recent tenth of the window's scores (so it follows a shift in
    traffic within a few dozen requests), at the level ``1 - aim`` where ``aim = target + GAIN * (target -
    realised)``: a strong proportional correction that pays back decisions made with a stale threshold and
    keeps the realised share over the whole window within about a point of the target (simulated on
    stationary and shifted beta-distributed streams). Single-threaded: call it from the event loop.
    """

    def __init__(self, target: float, window: int = 1000, initial_threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target share must be in [0, 1], got {target}")
        if window < 10:
            raise ValueError("window must hold at least 10 requests")
        self.target = target
        self.window = window
        self._initial = initial_threshold
        self._scores: deque[float] = deque(maxlen=max(20, window // 10))
        self.decisions = ShareWindow(window)
        self._threshold: float | None = None

    def threshold(self) -> float:
        """The threshold to apply to the next request."""
        if self._threshold is None:
            self._threshold = self._compute()
        return self._threshold

    def _compute(self) -> float:
        if len(self._scores) < self._scores.maxlen // 2:  # type: ignore[operator]
            return self._initial
        aim = min(1.0, max(0.0, self.target + GAIN * (self.target - self.realised_share())))
        if aim <= 0.0:
            return min(1.0, math.nextafter(max(self._scores), math.inf))
        return float(np.quantile(np.fromiter(self._scores, dtype=np.float64), 1.0 - aim))

    def observe(self, score: float) -> bool:
        """Record one request's score and whether the current threshold sent it large; returns that."""
        large = score >= self.threshold()
        self.decisions.add(large)
        self._scores.append(score)
        self._threshold = None
        return large

    def realised_share(self) -> float:
        """Share of the window's decisions that went large (0.0 before any request)."""
        return self.decisions.share() or 0.0


def first_threshold(*candidates: float | None) -> float:
    """The first threshold that is set (settings before a router's recommendation), else ``DEFAULT_THRESHOLD``."""
    for value in candidates:
        if value is not None:
            return value
    return DEFAULT_THRESHOLD


def share_controller_from(target_large_share: float | None, window: int,
                          threshold: float | None = None) -> ShareController | None:
    """The in-process controller when a target large share is set (``routing.target_large_share``), else None.

    ``threshold`` (``routing.threshold``) is applied until the window holds enough scores to steer by.
    """
    if target_large_share is None:
        return None
    return ShareController(target_large_share, window, first_threshold(threshold))
