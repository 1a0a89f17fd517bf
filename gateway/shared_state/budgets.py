"""Spend caps per API key and team: reserve before the backend call, commit the priced cost when it ends."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.accounting import RequestOutcome
from gateway.admission.auth import Principal
from gateway.admission.limits import estimate_tokens, message_chars
from gateway.pricing import PriceTable
from gateway.settings import Budget, BudgetSettings
from gateway.shared_state.base import (
    Caps,
    InsufficientQuotaError,
    Scope,
    SharedStateUnavailable,
    Spend,
    SpendStore,
    Verdict,
    unavailable_error,
)
from gateway.shared_state.spend import MemorySpendStore
from routers.base import RouteDecision

log = logging.getLogger("tiergate.budgets")
NANO = 1_000_000_000  # spend is counted in nano-USD: integers add exactly in Redis


def nano(usd: float | None) -> int | None:
    return None if usd is None else round(usd * NANO)


def caps(budget: Budget) -> Caps:
    return Caps(nano(budget.daily_usd), nano(budget.monthly_usd), nano(budget.large_daily_usd),
                nano(budget.large_monthly_usd))


def utc_periods(now: dt.datetime) -> tuple[str, str]:
    return now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class Reservation:
    scopes: list[Scope]
    large: bool
    estimate: int
    day: str
    month: str
    store: SpendStore


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BudgetGate:
    """Decides, after routing, whether a key may spend on the chosen tier; an outcome sink that commits costs.

    Large-tier budget spent: a routed request goes small (reason ``budget``), an explicit large-tier request
    gets 429 ``insufficient_quota``. Whole budget spent: 429 ``insufficient_quota``. A request's estimated
    cost (prompt estimate plus ``max_tokens`` or ``reserve_completion_tokens``) is reserved until its real
    cost is known, so concurrent requests overshoot a cap by at most one request.
    """

    def __init__(self, settings: BudgetSettings, store: SpendStore, prices: PriceTable,
                 models: dict[str, str], fail_open: bool = True,
                 on_action: Callable[[str, str], None] | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.settings = settings
        self.store = store
        self.local: SpendStore = store if isinstance(store, MemorySpendStore) else MemorySpendStore()
        self.prices = prices
        self.models = models  # tier -> model name, to price an estimate
        self.fail_open = fail_open
        self.on_action = on_action
        self.clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    def scopes(self, key: str) -> list[Scope]:
        budget = self.settings.keys.get(key)
        if budget is None:
            return []
        found = [Scope(f"key:{key}", caps(budget))]
        if budget.team is not None and budget.team in self.settings.teams:
            found.append(Scope(f"team:{budget.team}", caps(self.settings.teams[budget.team])))
        return found

    def estimate(self, body: dict[str, Any], tier: str, prompt_tokens: int = 0) -> int:
        """Nano-USD to reserve; ``prompt_tokens``: admission's estimate from the same messages, when made."""
        prompt = prompt_tokens or estimate_tokens(message_chars(body.get("messages") or []))
        completion = self.settings.reserve_completion_tokens
        for param in ("max_completion_tokens", "max_tokens"):
            value = body.get(param)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                completion = value
                break
        return round(self.prices.cost(self.models.get(tier), prompt, completion) * NANO)

    async def _reserve(self, scopes: list[Scope], large: bool, estimate: int) -> tuple[Verdict, SpendStore]:
        day, month = utc_periods(self.clock())
        try:
            return await self.store.reserve(scopes, large, estimate, day, month), self.store
        except SharedStateUnavailable:
            if not self.fail_open:
                raise unavailable_error() from None
            return await self.local.reserve(scopes, large, estimate, day, month), self.local

    async def check(self, body: dict[str, Any], outcome: RequestOutcome, decision: RouteDecision) -> RouteDecision:
        """The decision to use (possibly downgraded to small); raises 429 when the budget refuses."""
        principal: Principal | None = outcome.principal
        if principal is None:
            return decision
        scopes = self.scopes(principal.name)
        if not scopes:
            return decision
        large = decision.tier == "large"
        estimate = self.estimate(body, decision.tier, outcome.estimated_prompt_tokens)
        verdict, store = await self._reserve(scopes, large, estimate)
        if verdict == "large_exhausted":
            if decision.reason == "explicit_model":
                self._action(principal.name, "refused")
                raise InsufficientQuotaError(
                    "You exceeded your current quota for the large tier: this API key's large-tier budget is "
                    "spent. Use a routed model or the small tier, or wait for the budget to renew.",
                    headers={"x-should-retry": "false"})
            decision = RouteDecision("small", "budget", decision.score, decision.threshold)
            large = False
            estimate = self.estimate(body, "small", outcome.estimated_prompt_tokens)
            verdict, store = await self._reserve(scopes, large, estimate)
            if verdict == "ok":
                self._action(principal.name, "downgraded")
        if verdict != "ok":
            self._action(principal.name, "refused")
            raise InsufficientQuotaError(
                "You exceeded your current quota: this API key's budget is spent. It renews at the start of the "
                "next UTC day or month.", headers={"x-should-retry": "false"})
        day, month = utc_periods(self.clock())
        outcome.reservation = Reservation(scopes, large, estimate, day, month, store)
        return decision

    def _action(self, key: str, action: str) -> None:
        if self.on_action is not None:
            self.on_action(key, action)

    def record(self, outcome: RequestOutcome) -> None:
        """Commit the priced cost (an outcome sink; runs after the accountant priced the outcome)."""
        reservation = outcome.reservation
        if reservation is None:
            return
        cost = round(outcome.cost_usd * NANO)
        task = asyncio.get_running_loop().create_task(self._commit(reservation, outcome.tier == "large", cost))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _commit(self, r: Reservation, large: bool, cost: int) -> None:
        try:
            await r.store.commit(r.scopes, large, r.estimate, r.large, cost, r.day, r.month)
        except SharedStateUnavailable:
            # The spend still counts here; Redis never learns of it (logged: budgets under-count by this much).
            log.warning("budget commit of %d nano-USD for %s lost: shared state unavailable", cost,
                        [s.name for s in r.scopes])
            await self.local.commit(r.scopes, large, r.estimate, r.large, cost, r.day, r.month)

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def usage(self, key: str) -> dict[str, Any]:
        """The key's (and its team's) spend and remaining budget for ``GET /v1/tiergate/usage``."""
        day, month = utc_periods(self.clock())
        out: dict[str, Any] = {"object": "tiergate.usage", "key": key, "day": day, "month": month, "scopes": []}
        for scope in self.scopes(key):
            try:
                spent = await self.store.spend(scope, day, month)
            except SharedStateUnavailable:
                raise unavailable_error() from None
            out["scopes"].append(describe(scope, spent))
        return out


def describe(scope: Scope, spent: Spend) -> dict[str, Any]:
    kind, _, name = scope.name.partition(":")
    periods: dict[str, Any] = {}
    caps, used_by = scope.caps, spent
    for period, cap, used in (("daily", caps.daily, used_by.daily), ("monthly", caps.monthly, used_by.monthly),
                              ("large_daily", caps.large_daily, used_by.large_daily),
                              ("large_monthly", caps.large_monthly, used_by.large_monthly)):
        periods[period] = {"spent_usd": used / NANO, "limit_usd": None if cap is None else cap / NANO,
                           "remaining_usd": None if cap is None else max(0, cap - used) / NANO}
    return {"kind": kind, "name": name, **periods}
