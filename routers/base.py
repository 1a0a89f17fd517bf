"""Routing vocabulary shared by every router: tiers, decisions, and the scorer and router protocols."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Tier = Literal["small", "large"]
TIERS: tuple[Tier, Tier] = ("small", "large")

# Why a request went where it went; exported as a metric label, so the set stays small and fixed.
Reason = Literal[
    "score_below_threshold",  # classifier score < threshold -> small
    "score_above_threshold",  # classifier score >= threshold -> large
    "explicit_model",  # the client named a backend model directly
    "fixed",  # always-small / always-large routers
    "random",  # the random baseline router
    "classifier_error",  # the classifier failed, timed out or was overloaded: fail-safe tier
    "fallback",  # the chosen tier failed and the other tier answered
    "budget",  # the key's large-tier budget is spent: routed to the small tier
    "sticky",  # a tool loop or pinned conversation stays on the tier it started on
    "capability",  # the scored tier lacks what the request needs (tools, json_schema, vision, context)
]


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes, and why."""

    tier: Tier
    reason: Reason
    score: float | None = None
    threshold: float | None = None
    router: str | None = None  # the checkpoint that scored the request (routers.swap.checkpoint_name)

    def moved_to(self, tier: Tier, reason: Reason | None = None) -> RouteDecision:
        """The same decision for another tier (a fallback, a key's allowed tier); ``dataclasses.replace`` costs
        about a percent of the gateway's CPU per request on the pass-through path."""
        return RouteDecision(tier, reason or self.reason, self.score, self.threshold, self.router)


DEFAULT_THRESHOLD = 0.5  # the shared rule's threshold when neither the settings nor the router set one


def decide(score: float, threshold: float, router: str | None = None) -> RouteDecision:
    """The one shared rule: ``score >= threshold`` goes to the large tier."""
    if score >= threshold:
        return RouteDecision("large", "score_above_threshold", score, threshold, router)
    return RouteDecision("small", "score_below_threshold", score, threshold, router)


@runtime_checkable
class Scorer(Protocol):
    """Scores texts with ``P(large needed)`` in [0, 1]. Synchronous and batch-first: callers run it off the loop."""

    def score_batch(self, texts: Sequence[str]) -> list[float]: ...

    @property
    def recommended_threshold(self) -> float | None:
        """The threshold the checkpoint was calibrated for (its ``metadata.json``); None if it has none."""


class Router(Protocol):
    """Async routing policy: the text a request should be judged by -> a score in [0, 1] -> a decision.

    The caller picks the threshold (per-request override, the online share controller, settings, else
    :attr:`recommended_threshold`) and hands it to :meth:`decide`, so every router is steered the same way;
    a router that scores (the classifier) applies the shared rule :func:`decide` there, a baseline names its
    own reason. Routers are built by name in :mod:`routers.registry`.
    """

    name: str
    # False for baselines that score without looking at the request: the caller then skips extracting the text,
    # and the breaker and timeout that guard a real classifier.
    reads_text: bool

    async def score(self, text: str) -> float: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def ready(self) -> bool: ...

    @property
    def recommended_threshold(self) -> float | None:
        """This router's own threshold (a trained checkpoint's calibration); None: the caller's default."""

    def decide(self, score: float, threshold: float, checkpoint: str | None = None) -> RouteDecision:
        """The decision for ``score`` at ``threshold``; ``checkpoint`` names what scored it, when known."""
