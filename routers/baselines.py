"""The baseline routers: always one tier (reason ``fixed``) and a seeded coin (reason ``random``)."""

from __future__ import annotations

import random

from routers.base import DEFAULT_THRESHOLD, RouteDecision, Tier, decide
from routers.errors import ClassifierNotReadyError


class _Baseline:
    """Start, stop and readiness of a router that loads nothing (and never reads the request)."""

    reads_text = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._started = False

    async def start(self) -> None:
        self._started = True

    def ready(self) -> bool:
        return self._started

    async def aclose(self) -> None:
        self._started = False

    def queue_depth(self) -> int:
        return 0

    def _check_started(self) -> None:
        if not self._started:
            raise ClassifierNotReadyError(f"router {self.name!r} is not started or is closed")


class ConstantRouter(_Baseline):
    """Sends every request to ``tier`` whatever the threshold; its score is 0.0 (small) or 1.0 (large)."""

    def __init__(self, name: str, tier: Tier) -> None:
        super().__init__(name)
        self.tier: Tier = tier

    async def score(self, text: str) -> float:
        self._check_started()
        return 1.0 if self.tier == "large" else 0.0

    @property
    def recommended_threshold(self) -> float | None:
        return None  # the threshold plays no part here; decisions report the caller's

    def decide(self, score: float, threshold: float, checkpoint: str | None = None) -> RouteDecision:
        return RouteDecision(self.tier, "fixed", score, threshold)


class RandomRouter(_Baseline):
    """A uniform random score per request (seeded for reproducible tests and baselines)."""

    def __init__(self, name: str, seed: int | None = None) -> None:
        super().__init__(name)
        self._rng = random.Random(seed)

    async def score(self, text: str) -> float:
        self._check_started()
        return self._rng.random()

    @property
    def recommended_threshold(self) -> float | None:
        return DEFAULT_THRESHOLD  # uniform scores: half the traffic goes large

    def decide(self, score: float, threshold: float, checkpoint: str | None = None) -> RouteDecision:
        return RouteDecision(decide(score, threshold).tier, "random", score, threshold)
