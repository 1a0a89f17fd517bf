"""Everything one app instance owns (no module globals): settings, backends, router, service, accounting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from gateway.accounting import Accountant, RequestOutcome
from gateway.backends.base import Backend
from gateway.errors import GatewayError
from gateway.service import ChatService
from gateway.settings import Settings
from routers.base import Router, Tier


@dataclass
class GatewayState:
    settings: Settings
    backends: dict[Tier, Backend]
    router: Router
    service: ChatService
    accountant: Accountant
    started_at: float = field(default_factory=time.time)
    extras: dict[str, Any] = field(default_factory=dict)

    async def admit(self, request: Request, body: dict[str, Any], outcome: RequestOutcome) -> None:
        """Authentication and limits run here before any routing work (see gateway.auth / gateway.limits)."""

    def answer_headers(self, outcome: RequestOutcome) -> dict[str, str]:
        """Headers that need the finished outcome of a JSON answer (its cost)."""
        return {}

    def error_headers(self, outcome: RequestOutcome, error: GatewayError, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id}
        if outcome.decision is not None:
            headers["x-tiergate-tier"] = outcome.decision.tier
            headers["x-tiergate-reason"] = outcome.decision.reason
        return headers

    def readiness(self) -> dict[str, bool]:
        checks = {"router": self.router.ready()}
        checks.update({f"backend:{tier}": backend.ready() for tier, backend in self.backends.items()})
        return checks
