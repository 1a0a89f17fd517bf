"""The interfaces of shared state (pins, spend) and the shield every Redis call goes through (timeout + breaker)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from gateway.backends.failures import CircuitBreaker
from gateway.errors import GatewayError, RateLimitError
from gateway.settings import BreakerSettings

log = logging.getLogger("tiergate.shared_state")
T = TypeVar("T")

# How the caps of a key (and its team) stand for one request on one tier.
Verdict = Literal["ok", "large_exhausted", "exhausted"]


class PinStore(Protocol):
    """Sticky conversations: which tier a conversation key is pinned to, for ``ttl_s`` seconds."""

    async def get(self, key: str) -> str | None: ...  # the pinned tier name, or None

    async def put(self, key: str, tier: str, ttl_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Caps:
    """One scope's caps in nano-USD (integers, so Redis adds them exactly); ``None`` = no cap."""

    daily: int | None = None
    monthly: int | None = None
    large_daily: int | None = None
    large_monthly: int | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """Who pays: ``key:<name>`` or ``team:<name>``, with its caps."""

    name: str
    caps: Caps


@dataclass(frozen=True, slots=True)
class Spend:
    """One scope's spend in nano-USD for the current UTC day and month (committed, not reserved)."""

    daily: int = 0
    monthly: int = 0
    large_daily: int = 0
    large_monthly: int = 0


class SpendStore(Protocol):
    """Reserves a request's estimated cost against every scope's caps, atomically, then commits the real cost.

    A reservation counts against the caps until it is committed, so concurrent requests on any replica
    cannot overshoot a cap by more than one request's cost.
    """

    async def reserve(self, scopes: list[Scope], large: bool, estimate: int, day: str, month: str) -> Verdict:
        """``ok`` (and ``estimate`` reserved), or which cap refuses it (nothing reserved)."""
        ...

    async def commit(self, scopes: list[Scope], large: bool, estimate: int, reserved_large: bool, cost: int,
                     day: str, month: str) -> None:
        """Release the reservation (made with ``reserved_large``) and add the real ``cost`` (on ``large``)."""
        ...

    async def spend(self, scope: Scope, day: str, month: str) -> Spend: ...


class SharedStateUnavailable(Exception):
    """Redis is down, slow, or its breaker is open; the caller falls back (fail_open) or refuses (fail_closed)."""


def unavailable_error() -> GatewayError:
    return GatewayError("the gateway's shared state (Redis) is unavailable; retry shortly", status=503,
                        code="shared_state_unavailable", headers={"retry-after": "1"})


class InsufficientQuotaError(RateLimitError):
    """OpenAI's answer when an account's budget is spent."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class Shield:
    """Every shared-state call: a short timeout and a breaker, so a slow or dead Redis costs at most
    ``timeout_s`` per request until the breaker opens, and nothing while it is open."""

    def __init__(self, timeout_s: float, breaker: BreakerSettings,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.timeout_s = timeout_s
        self.breaker = CircuitBreaker("redis", breaker)
        self.on_failure = on_failure
        self.failures = 0

    async def call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """The call's result, or :class:`SharedStateUnavailable` (counted) when it fails or the breaker is open."""
        if not self.breaker.allow():
            self._failed(operation)
            raise SharedStateUnavailable(f"{operation}: circuit open")
        try:
            result = await asyncio.wait_for(call(), self.timeout_s)
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        except Exception as exc:
            self.breaker.failure()
            self._failed(operation)
            log.debug("shared state %s failed: %r", operation, exc)
            raise SharedStateUnavailable(f"{operation}: {exc!r}") from exc
        self.breaker.success()
        return result

    def _failed(self, operation: str) -> None:
        self.failures += 1
        if self.on_failure is not None:
            self.on_failure(operation)
