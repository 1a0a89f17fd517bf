"""Which tier a request goes to: the model name (an alias to route, or a tier's own model), the threshold, and
the router's score behind a breaker (its failure sends the request to the fail-safe tier)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from gateway.accounting import RequestOutcome
from gateway.backends.base import Backend
from gateway.backends.failures import CircuitBreaker
from gateway.errors import InvalidRequestError, ModelNotFoundError
from gateway.settings import Settings
from routers.base import RouteDecision, Router, Tier
from routers.errors import ClassifierOverloadedError
from routers.features import routing_text
from routers.swap import SwappableRouter
from routers.threshold import ShareController, first_threshold

THRESHOLD_HEADER = "x-tiergate-threshold"


@dataclass(frozen=True, slots=True)
class Target:
    """What a model name asks for: routing (optionally with a threshold override), or one tier directly."""

    tier: Tier | None = None
    threshold: float | None = None


def parse_threshold(value: str, param: str) -> float:
    try:
        threshold = float(value)
    except ValueError:
        threshold = -1.0
    if not 0.0 <= threshold <= 1.0:
        raise InvalidRequestError(f"threshold must be a number between 0 and 1, got {value!r}", param=param)
    return threshold


class ModelTable:
    """Maps client model names to targets: routing aliases (``name`` or ``name@0.35``) and backend models."""

    def __init__(self, aliases: list[str], backends: dict[Tier, Backend]) -> None:
        self.aliases = list(aliases)
        # The names themselves, resolved once (each request resolves its model twice: steering, the decider):
        # the aliases, then each backend's model (which wins where a name is both).
        self.targets = {alias: Target() for alias in self.aliases} | {
            backend.model: Target(tier=tier) for tier, backend in backends.items()}

    def resolve(self, model: str) -> Target:
        target = self.targets.get(model)
        if target is not None:
            return target
        name, sep, threshold = model.partition("@")
        if name in self.aliases:
            return Target(threshold=parse_threshold(threshold, "model") if sep else None)
        known = ", ".join(self.names())
        raise ModelNotFoundError(f"The model '{model}' does not exist. Available models: {known}", param="model")

    def names(self) -> list[str]:
        return list(self.targets)  # aliases first, then the backend models


class RouteDecider:
    """Classify -> decide: the tier for one request, from its model name, the threshold and the router's score."""

    def __init__(self, settings: Settings, backends: dict[Tier, Backend], router: Router,
                 share_controller: ShareController | None = None) -> None:
        self.routing = settings.routing
        self.backends = backends
        self.router = router
        self.models = ModelTable(settings.routing.aliases, backends)
        self.share_controller = share_controller
        self.classifier_breaker = CircuitBreaker("classifier", settings.resilience.classifier_breaker)

    def base_threshold(self) -> float:
        if self.share_controller is not None:
            return self.share_controller.threshold()
        if isinstance(self.router, SwappableRouter) and self.router.promoted_threshold is not None:
            return self.router.promoted_threshold  # re-derived at promotion for the same large share
        # The settings' threshold, else the router's own (a trained checkpoint's calibration), else the default.
        return first_threshold(self.routing.threshold, self.router.recommended_threshold)

    async def decide(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome) -> RouteDecision:
        target = self.models.resolve(body["model"])
        if target.tier is not None:
            return RouteDecision(target.tier, "explicit_model")
        threshold = target.threshold
        if threshold is None and THRESHOLD_HEADER in headers:
            threshold = parse_threshold(headers[THRESHOLD_HEADER], THRESHOLD_HEADER)
        overridden = threshold is not None
        threshold = self.base_threshold() if threshold is None else threshold
        scored = await self._score(body, outcome)
        if scored is None:  # the classifier is a dependency that may fail: the request still gets an answer
            return RouteDecision(self.routing.fail_safe_tier, "classifier_error", None, threshold)
        score, checkpoint = scored
        if self.share_controller is not None and not overridden:
            self.share_controller.observe(score)
        return self.router.decide(score, threshold, checkpoint)  # a baseline names its own reason

    async def _score(self, body: dict[str, Any], outcome: RequestOutcome) -> tuple[float, str | None] | None:
        """The router's score and the checkpoint that gave it (when known); None when it could not score. The
        time spent on it is ``outcome.routing_seconds``."""
        started = time.perf_counter()
        if not self.router.reads_text:  # a baseline: no text to extract, no breaker or timeout to pay for
            try:
                return await self.router.score(""), None
            except Exception:
                return None
            finally:
                outcome.routing_seconds = time.perf_counter() - started
        try:
            # Outside the breaker: odd input must not let one client switch routing off for everyone.
            text = outcome.prompt_text  # already extracted when the request log keeps prompts
            if text is None:
                text = routing_text(body["messages"], include_system=self.routing.include_system_prompt)
        except Exception:
            return None
        if not self.classifier_breaker.allow():  # broken: do not wait on it again until it may have recovered
            return None
        try:
            async with asyncio.timeout(self.routing.classifier.timeout_s):
                if isinstance(self.router, SwappableRouter):  # also names the checkpoint that scored it
                    score, checkpoint = await self.router.score_named(text)
                else:
                    score, checkpoint = await self.router.score(text), None
        except Exception as exc:
            if isinstance(exc, ClassifierOverloadedError):
                self.classifier_breaker.release()  # busy, not broken: only this request skips it
            else:
                self.classifier_breaker.failure()
            return None
        finally:
            outcome.routing_seconds = time.perf_counter() - started
        self.classifier_breaker.success()
        return score, checkpoint
