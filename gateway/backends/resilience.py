"""Upstream resilience: retries with backoff before the first byte, circuit breakers, fallback to the other tier."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeVar

from gateway.accounting import RequestOutcome
from gateway.admission.limits import Bulkhead, check_max_tokens
from gateway.backends.base import Backend, ChatObject, close_iterator
from gateway.backends.failures import BREAKER_CATEGORIES, CircuitBreaker, failure_category, retry_after_seconds
from gateway.errors import GatewayError, PermissionDeniedError, UpstreamError, UpstreamStatusError
from gateway.redaction import Redactor
from gateway.settings import OpenAIBackend, Settings
from gateway.telemetry.log_context import upstream_secrets
from routers.base import RouteDecision, Tier

log = logging.getLogger("tiergate.resilience")
T = TypeVar("T")
Release = Callable[[], None]


class Resilience:
    """Runs one backend call for a decision: retries, breaker and bulkhead per tier, then fallback."""

    def __init__(self, settings: Settings, backends: dict[Tier, Backend],
                 fallback_check: Callable[[dict[str, Any], Tier], None] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.settings = settings
        self.policy = settings.resilience
        self.backends = backends
        self.sleep = sleep
        self.breakers = {tier: CircuitBreaker(f"backend:{tier}", self.policy.breaker) for tier in backends}
        self.bulkheads: dict[Tier, Bulkhead] = {}
        self.redact = Redactor(upstream_secrets(settings))
        # Raises when a fallback tier cannot serve the body (gateway.conversations.steering: capabilities).
        self.fallback_check = fallback_check
        # Where each tier falls back to ("small->large"), from the settings once.
        self.fallback_to: dict[str, str] = dict(d.split("->") for d in self.policy.fallback.directions)
        for tier, cfg in settings.tiers.items():  # only where a cap is set: an unbounded one would be a no-op
            if tier in backends and isinstance(cfg, OpenAIBackend) and cfg.max_concurrency:
                self.bulkheads[tier] = Bulkhead(tier, cfg.max_concurrency, cfg.max_queue, cfg.timeout.pool)

    def plan(self, decision: RouteDecision, tiers: Collection[Tier] | None = None) -> list[RouteDecision]:
        """The decision and its fallback, restricted to ``tiers`` (those the caller's key may use; None: all)."""

        def allowed(tier: Tier) -> bool:
            return tiers is None or tier in tiers

        if not allowed(decision.tier):
            if decision.reason == "explicit_model":
                raise PermissionDeniedError(f"this API key may not use the {decision.tier} tier", param="model")
            other = self._other(decision.tier)
            if other is None or not allowed(other):
                raise PermissionDeniedError("this API key may not use any configured tier", param="model")
            decision = decision.moved_to(other)
        steps = [decision]
        target: Tier | None = self.fallback_to.get(decision.tier)  # type: ignore[assignment]
        if (target is not None and target != decision.tier and target in self.backends and allowed(target)
                and (decision.reason != "explicit_model" or self.policy.fallback.explicit_model)):
            steps.append(decision.moved_to(target, "fallback"))
        return steps

    def _other(self, tier: Tier) -> Tier | None:
        return next((t for t in self.backends if t != tier), None)

    async def run(self, body: dict[str, Any], decision: RouteDecision, outcome: RequestOutcome,
                  call: Callable[[Backend], Awaitable[T]], tiers: Collection[Tier] | None = None,
                  hold: list[Release] | None = None) -> tuple[T, RouteDecision]:
        """Call the decided tier, then its fallback, within ``tiers`` (None: any); each tier tried is recorded on
        the outcome. Returns the result and the decision that produced it. With ``hold``, the backend's
        concurrency slot is kept after success and its release appended there."""
        steps = self.plan(decision, tiers)
        last: GatewayError | None = None
        for index, step in enumerate(steps):
            try:
                check_max_tokens(body, step.tier, self.settings.limits)
                if index > 0 and self.fallback_check is not None:
                    self.fallback_check(body, step.tier)
            except GatewayError:
                if index == 0:
                    raise
                break  # the fallback tier does not allow this request; the primary's error stands
            backend = self.backends[step.tier]
            outcome.routed_to(step, backend.name, backend.model)
            if index > 0:
                outcome.fallback = True
            try:
                return await self._attempts(step.tier, backend, outcome, call, hold), step
            except GatewayError as error:
                category = failure_category(error)
                if category is None or category not in self.policy.fallback.failures:
                    raise
                last = error
                if index + 1 < len(steps):
                    log.warning("tier %s failed (%s); falling back to %s", step.tier, category, steps[index + 1].tier)
        assert last is not None
        raise last

    async def _attempts(self, tier: Tier, backend: Backend, outcome: RequestOutcome,
                        call: Callable[[Backend], Awaitable[T]], hold: list[Release] | None) -> T:
        breaker = self.breakers[tier]
        bulkhead = self.bulkheads.get(tier)
        attempt = 0
        while True:
            attempt += 1
            if not breaker.allow():
                raise UpstreamError(f"backend {backend.name} is unavailable (circuit open)", kind="circuit_open",
                                    status=503, headers={"retry-after": str(max(1, round(breaker.retry_in())))})
            release = None
            kept = False
            try:
                release = await bulkhead.acquire() if bulkhead is not None else None
                result = await guarded(call, backend)
                if hold is not None and release is not None:
                    hold.append(release)
                    kept = True
            except GatewayError as caught:
                error = self._sanitize(tier, caught)
                category = failure_category(error)
                if category in BREAKER_CATEGORIES:
                    breaker.failure()
                elif category is None:
                    breaker.success()  # the upstream answered; the request itself was at fault
                else:
                    breaker.release()
                delay = self._delay(attempt, error, category)
                if delay is None:
                    if error is caught:
                        raise
                    raise error from None
            except BaseException:
                breaker.release()
                raise
            else:
                breaker.success()
                return result
            finally:
                if release is not None and not kept:
                    release()  # before any backoff: a waiting request may use the slot meanwhile
            log.debug("retrying tier %s in %.2f s after %s (attempt %d)", tier, delay, category, attempt)
            outcome.retries += 1
            await self.sleep(delay)

    def _sanitize(self, tier: Tier, error: GatewayError) -> GatewayError:
        """An upstream's 401/403, or an error coded as being about the account (a 400 ``invalid_api_key``, a
        429 ``insufficient_quota``), concerns the gateway's own credentials: a 502 without its text. Every
        other error has any part of an upstream secret removed from every field."""
        cfg = self.settings.tiers.get(tier)
        forwarding = isinstance(cfg, OpenAIBackend) and cfg.forward_client_authorization
        status = error.upstream_status if isinstance(error, UpstreamStatusError) else error.status
        if isinstance(error, UpstreamStatusError) and not forwarding and (
                status in (401, 403) or error.code in OWN_CREDENTIAL_CODES or error.type in OWN_CREDENTIAL_CODES):
            log.error("upstream for tier %s rejected the gateway's credentials (HTTP %d, %s)", tier, status,
                      self.redact(str(error.code or error.type)))
            return UpstreamError(f"upstream for tier {tier} rejected the gateway's credentials",
                                 kind="upstream_auth")
        return redact_error(error, self.redact)

    def _delay(self, attempt: int, error: GatewayError, category: str | None) -> float | None:
        retry = self.policy.retry
        if isinstance(error, UpstreamError) and error.kind == "upstream_auth":
            return None
        if category is None or category not in retry.failures or attempt >= retry.attempts:
            return None
        backoff = min(retry.max_delay_s, retry.base_delay_s * 2.0 ** (attempt - 1))
        backoff = backoff / 2 + random.uniform(0, backoff / 2)  # jitter keeps replicas from retrying in step
        if category == "rate_limit":
            wait = retry_after_seconds(error.headers)
            if wait is not None:
                if wait > retry.max_retry_after_s:
                    return None  # the client sees the 429 and its Retry-After
                return max(wait, backoff)
        return backoff

    async def open_stream(self, body: dict[str, Any], decision: RouteDecision, outcome: RequestOutcome,
                          call: Callable[[Backend], Awaitable[tuple[T, AsyncIterator[ChatObject]]]],
                          tiers: Collection[Tier] | None = None) -> tuple[T, AsyncIterator[ChatObject]]:
        """Open a stream (``call`` awaits its first object) with retries and fallback; the chunks that follow
        are watched for the breaker, and the backend's concurrency slot is held until the stream closes."""
        hold: list[Release] = []
        (first, chunks), step = await self.run(body, decision, outcome, call, tiers, hold)
        return first, WatchedStream(chunks, self.breakers[step.tier], hold, self.redact)


# Upstream error codes (or types) that are about the account the gateway calls with, not the request.
OWN_CREDENTIAL_CODES = frozenset({"invalid_api_key", "invalid_organization", "invalid_project",
                                  "account_deactivated", "insufficient_quota", "billing_hard_limit_reached"})


def redact_error(error: GatewayError, redact: Redactor) -> GatewayError:
    """``error`` with secret fragments removed from message, type, code and param (in place)."""
    if redact:
        error.message = redact(error.message)
        error.type = redact(error.type)
        error.code = None if error.code is None else redact(str(error.code))
        error.param = None if error.param is None else redact(str(error.param))
    return error


class WatchedStream:
    """The chunks after the first: a failure counts against the breaker; closing (even unstarted) frees the slot."""

    def __init__(self, chunks: AsyncIterator[ChatObject], breaker: CircuitBreaker, hold: list[Release],
                 redact: Redactor | None = None) -> None:
        self.chunks = chunks
        self.breaker = breaker
        self.hold = hold
        self.redact = redact or Redactor(())

    def __aiter__(self) -> WatchedStream:
        return self

    async def __anext__(self) -> ChatObject:
        try:
            return await anext(self.chunks)
        except GatewayError as error:
            if failure_category(error) in BREAKER_CATEGORIES:
                self.breaker.failure()
            redact_error(error, self.redact)
            raise

    async def aclose(self) -> None:
        try:
            await close_iterator(self.chunks)
        finally:
            hold, self.hold = self.hold, []
            for release in hold:
                release()


async def guarded(call: Callable[[Backend], Awaitable[T]], backend: Backend) -> T:
    """A backend failing with something other than a GatewayError broke its contract: an unknown upstream
    failure (502 ``protocol``), which counts against its breaker like any other."""
    try:
        return await call(backend)
    except GatewayError:
        raise
    except Exception as exc:
        log.error("backend %s failed unexpectedly: %s: %s", backend.name, type(exc).__name__, exc)
        log.debug("traceback of the failure of backend %s", backend.name, exc_info=exc)
        raise UpstreamError(f"upstream {backend.name} failed", kind="protocol") from exc


async def prime(chunks: AsyncIterator[ChatObject]) -> tuple[ChatObject, AsyncIterator[ChatObject]]:
    """Await a stream's first object (``{}`` for an empty stream), closing the stream if that fails, so an
    early upstream failure surfaces before anything reaches the client."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = {}
    except BaseException:
        await close_iterator(chunks)
        raise
    return first, chunks


