"""Everything one app instance owns (no module globals), assembled by ``create_app``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.accounting import Accountant, RequestOutcome
from gateway.admission.guard import Guard
from gateway.backends.base import Backend
from gateway.conversations.steering import Steering
from gateway.decisions import RouteDecider
from gateway.errors import GatewayError
from gateway.service import ChatService
from gateway.settings import Settings
from gateway.shared_state.wiring import SharedState
from routers.base import Router, Tier

if TYPE_CHECKING:
    from gateway.learning.loop import LearningLoop


@dataclass
class GatewayState:
    settings: Settings
    backends: dict[Tier, Backend]
    router: Router
    decider: RouteDecider  # the router's decision for a request
    steering: Steering  # sticky conversations and capabilities around the decider
    service: ChatService  # one chat request end to end
    accountant: Accountant
    guard: Guard  # auth, admission, limits, draining
    shared: SharedState  # limits, budgets, pins in memory or Redis (gateway.shared_state)
    learning: LearningLoop | None = None  # shadow answers, judge, feedback (gateway.learning); None when off
    started_at: float = field(default_factory=time.time)

    def error_headers(self, outcome: RequestOutcome, error: GatewayError, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id}
        if outcome.retries or outcome.fallback:
            headers["x-should-retry"] = "false"  # the gateway already retried; clients should not multiply it
        if outcome.decision is not None:
            headers["x-tiergate-tier"] = outcome.decision.tier
            headers["x-tiergate-reason"] = outcome.decision.reason
        return headers

    def readiness(self) -> dict[str, bool]:
        checks = {"loaded": self.guard.loaded, "router": self.router.ready()}
        if self.guard.draining:
            checks["accepting"] = False  # shutting down: load balancers should stop sending
        checks.update({f"backend:{tier}": backend.ready() for tier, backend in self.backends.items()})
        return checks
