"""Builds one app's shared state from ``state:`` and ``budgets:`` settings; ``create_app`` opens and closes it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.accounting import RequestOutcome
from gateway.admission.auth import load_keys
from gateway.admission.guard import principal_of
from gateway.admission.limits import MemoryRateLimiter, RateLimiter
from gateway.pricing import PriceTable
from gateway.settings import Settings
from gateway.shared_state.base import PinStore, Shield
from gateway.shared_state.budgets import BudgetGate
from gateway.shared_state.key_metrics import KeyMetrics
from gateway.shared_state.spend import MemorySpendStore
from routers.base import RouteDecision
from routers.threshold import first_threshold

if TYPE_CHECKING:  # the Redis-backed modules import redis (about 20 MiB of RSS): only state.backend redis loads them
    from redis.asyncio import Redis

    from gateway.shared_state.share import SharedShareController

log = logging.getLogger("tiergate.shared_state")


class SharedState:
    """The rate limiter, spend caps, pin store and share-window sync of one app, in memory or in Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cfg = settings.state
        try:
            names = [key.name for key in load_keys(settings.auth)]
        except Exception:  # the guard reports a broken keys file; metrics then label every key "other"
            names = []
        self.redis: Redis | None = None
        self.shield: Shield | None = None
        fail_open = cfg.on_failure == "fail_open"
        if cfg.backend == "redis":
            from gateway.shared_state.limiter import RedisRateLimiter
            from gateway.shared_state.pins import RedisPinStore
            from gateway.shared_state.redis_client import connect
            from gateway.shared_state.spend import RedisSpendStore

            self.redis = connect(cfg)
            shield = self.shield = Shield(cfg.timeout_s, cfg.breaker)
            self.metrics = KeyMetrics(names + list(settings.budgets.keys),
                                      up=lambda: shield.breaker.state == "closed")
            shield.on_failure = self.metrics.failure
            self.limiter: RateLimiter = RedisRateLimiter(self.redis, shield, cfg.key_prefix, fail_open)
            self.pins: PinStore | None = RedisPinStore(self.redis, shield, cfg.key_prefix)
            store: Any = RedisSpendStore(self.redis, shield, cfg.key_prefix)
        else:
            self.metrics = KeyMetrics(names + list(settings.budgets.keys))
            self.limiter = MemoryRateLimiter()
            self.pins = None  # the in-memory pin table of sticky conversations applies
            store = MemorySpendStore()
        self.budgets: BudgetGate | None = None
        if settings.budgets.keys:
            models: dict[str, str] = {tier: backend.model for tier, backend in settings.tiers.items()}
            self.budgets = BudgetGate(settings.budgets, store, PriceTable.from_settings(settings), models,
                                      fail_open, on_action=self.metrics.budget_action)
        self.share: SharedShareController | None = None

    def share_controller(self) -> SharedShareController | None:
        """The Redis-backed share controller when routing.target_large_share is set and the backend is Redis."""
        routing = self.settings.routing
        if self.redis is None or self.shield is None or routing.target_large_share is None:
            return None
        from gateway.shared_state.share import SharedShareController

        self.share = SharedShareController(
            self.redis, self.shield, self.settings.state.key_prefix, routing.target_large_share,
            routing.share_window, first_threshold(routing.threshold), self.settings.state.share_sync_s)
        return self.share

    async def check_budget(self, body: dict[str, Any], outcome: RequestOutcome,
                           decision: RouteDecision) -> RouteDecision:
        if self.budgets is None:
            return decision
        return await self.budgets.check(body, outcome, decision)

    def record(self, outcome: RequestOutcome) -> None:
        self.metrics.record(outcome)
        if self.budgets is not None:
            self.budgets.record(outcome)

    def start(self) -> None:
        if self.share is not None:
            self.share.start()

    async def aclose(self) -> None:
        if self.share is not None:
            await self.share.aclose()
        if self.budgets is not None:
            await self.budgets.flush()
        if self.redis is not None:
            from gateway.shared_state.limiter import RedisRateLimiter

            if isinstance(self.limiter, RedisRateLimiter):
                await self.limiter.flush()
            await self.redis.aclose()

    def api(self) -> APIRouter:
        """``GET /v1/tiergate/usage``: the calling key's own spend and remaining budget."""
        api = APIRouter()

        @api.get("/v1/tiergate/usage", include_in_schema=False)
        async def usage(request: Request) -> Response:
            principal = principal_of(request)
            if self.budgets is None:
                body: dict[str, Any] = {"object": "tiergate.usage", "key": principal.name, "scopes": []}
            else:
                body = await self.budgets.usage(principal.name)
            return Response(orjson.dumps(body), media_type="application/json")

        return api
