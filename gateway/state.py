"""Everything one app instance owns (no module globals): settings, backends, router, service, accounting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from gateway.accounting import Accountant, RequestOutcome
from gateway.backends.base import Backend
from gateway.capabilities import describe, needs_of
from gateway.conversations.steering import Steering
from gateway.errors import GatewayError
from gateway.guard import Guard
from gateway.pricing import format_usd
from gateway.service import ChatService
from gateway.settings import Settings
from gateway.shared_state.base import InsufficientQuotaError
from gateway.shared_state.wiring import SharedState
from routers.base import RouteDecision, Router, Tier

if TYPE_CHECKING:
    from gateway.learning.loop import LearningLoop

COST_HEADER = "x-tiergate-cost-usd"


@dataclass
class GatewayState:
    settings: Settings
    backends: dict[Tier, Backend]
    router: Router
    service: ChatService
    accountant: Accountant
    started_at: float = field(default_factory=time.time)
    guard: Guard | None = None  # auth, limits, draining; built from settings when not given
    loaded: bool = False  # the router and every backend have started
    shared: SharedState | None = None  # limits, budgets, pins in memory or Redis (gateway.shared_state)
    steering: Steering = field(init=False)  # sticky conversations and capabilities around the router

    learning: LearningLoop | None = None  # shadow answers, judge, feedback (gateway.learning); None when off

    def __post_init__(self) -> None:
        if self.guard is None:
            self.guard = Guard(self.settings)
        self.accountant.sinks.append(self.guard)  # settles each key's real token usage
        self.steering = Steering(self.settings, self.service, self.shared.pins if self.shared is not None else None)

    async def admit(self, request: Request, body: dict[str, Any], outcome: RequestOutcome) -> None:
        """Authentication and limits run here before any routing work (see gateway.auth / gateway.limits)."""
        assert self.guard is not None
        await self.guard.admit(request, body, outcome)

    async def check_budget(self, body: dict[str, Any], outcome: RequestOutcome,
                           decision: RouteDecision) -> RouteDecision:
        """Spend caps after routing: the decision, downgraded to small when the large-tier budget is spent."""
        if self.shared is None:
            return decision
        decided = await self.shared.check_budget(body, outcome, decision)
        if decided.reason == "budget":  # downgraded after steering: the small tier must still serve the request
            lacking = self.steering.missing(decided.tier, needs_of(body))
            if lacking:
                raise InsufficientQuotaError(
                    f"You exceeded your current quota for the large tier, and the small tier does not support "
                    f"{describe(lacking)}: this request cannot be served until the budget renews.",
                    headers={"x-should-retry": "false"})
        return decided

    def answer_headers(self, outcome: RequestOutcome) -> dict[str, str]:
        """Headers that need the finished outcome of a JSON answer (its cost, from the real usage)."""
        self.accountant.price(outcome)
        return {COST_HEADER: format_usd(outcome.cost_usd)}

    def error_headers(self, outcome: RequestOutcome, error: GatewayError, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id}
        if outcome.retries or outcome.fallback:
            headers["x-should-retry"] = "false"  # the gateway already retried; clients should not multiply it
        if outcome.decision is not None:
            headers["x-tiergate-tier"] = outcome.decision.tier
            headers["x-tiergate-reason"] = outcome.decision.reason
        return headers

    def readiness(self) -> dict[str, bool]:
        checks = {"loaded": self.loaded, "router": self.router.ready()}
        if self.guard is not None and self.guard.draining:
            checks["accepting"] = False  # shutting down: load balancers should stop sending
        checks.update({f"backend:{tier}": backend.ready() for tier, backend in self.backends.items()})
        return checks
