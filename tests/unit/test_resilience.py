"""Retry policy, circuit breaker, fallback planning and rate limits, without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.accounting import RequestOutcome
from gateway.admission.auth import Principal
from gateway.admission.limits import Bulkhead, MemoryRateLimiter, Rule, check_max_tokens, check_request, message_chars
from gateway.backends.failures import CircuitBreaker, failure_category, retry_after_seconds
from gateway.backends.resilience import Resilience
from gateway.errors import (
    BackendOverloadedError,
    InvalidRequestError,
    PermissionDeniedError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from gateway.settings import BreakerSettings, LimitSettings, Settings
from routers.base import RouteDecision

TIERS = {"small": {"kind": "openai", "model": "s"}, "large": {"kind": "openai", "model": "l"}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedBackend:
    """Raises the scripted errors in order, then answers."""

    def __init__(self, name: str, *errors: Exception) -> None:
        self.name = name
        self.model = name
        self.errors = list(errors)
        self.calls = 0

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"answered_by": self.name}

    async def stream(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        yield {"answered_by": self.name}


def settings(**resilience: Any) -> Settings:
    return Settings(tiers=TIERS, resilience=resilience)  # type: ignore[arg-type]


def harness(config: Settings, small: ScriptedBackend, large: ScriptedBackend) -> tuple[Resilience, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Resilience(config, {"small": small, "large": large}, sleep=sleep), slept  # type: ignore[dict-item]


async def call(resilience: Resilience, outcome: RequestOutcome, tier: str = "small",
               reason: str = "score_below_threshold") -> Any:
    decision = RouteDecision(tier, reason, 0.2, 0.5)  # type: ignore[arg-type]
    tiers = outcome.principal.tiers if outcome.principal is not None else None
    result, step = await resilience.run({}, decision, outcome, lambda backend: backend.complete({}), tiers)
    assert outcome.decision == step and outcome.tier == step.tier  # the outcome names the tier that answered
    return result


def test_failure_categories_separate_client_faults_from_upstream_faults() -> None:
    assert failure_category(UpstreamStatusError(500, {})) == "server_error"
    assert failure_category(UpstreamStatusError(429, {})) == "rate_limit"
    assert failure_category(UpstreamStatusError(400, {})) is None
    assert failure_category(UpstreamTimeoutError("t")) == "timeout"
    assert failure_category(UpstreamError("c", kind="connect")) == "connect"
    assert failure_category(BackendOverloadedError("busy")) == "overloaded"
    assert failure_category(InvalidRequestError("bad")) is None


def test_retry_after_reads_seconds_milliseconds_and_garbage() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"Retry-After-Ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_breaker_opens_after_threshold_and_closes_after_a_good_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", BreakerSettings(failure_threshold=2, reset_after_s=10), clock)
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 10
    assert breaker.allow()  # the single half-open trial
    assert not breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_reopens_when_the_trial_fails() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", BreakerSettings(failure_threshold=1, reset_after_s=5), clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 4.9
    assert not breaker.allow()


async def test_retries_server_errors_then_answers_once() -> None:
    small = ScriptedBackend("small", UpstreamStatusError(500, {}), UpstreamStatusError(503, {}))
    resilience, slept = harness(settings(), small, ScriptedBackend("large"))
    outcome = RequestOutcome("r")
    assert await call(resilience, outcome) == {"answered_by": "small"}
    assert (small.calls, outcome.retries, outcome.fallback, len(slept)) == (3, 2, False, 2)
    assert all(0 < delay <= 2.0 for delay in slept)


async def test_backoff_grows_and_honours_retry_after() -> None:
    small = ScriptedBackend("small", UpstreamError("x", kind="connect"), UpstreamError("x", kind="connect"),
                            UpstreamError("x", kind="connect"),
                            UpstreamStatusError(429, {}, headers={"retry-after": "1.5"}))
    config = settings(retry={"attempts": 5, "base_delay_s": 0.1, "max_delay_s": 10},
                      fallback={"directions": []})
    resilience, slept = harness(config, small, ScriptedBackend("large"))
    await call(resilience, RequestOutcome("r"))
    assert 0.05 <= slept[0] <= 0.1 and 0.1 <= slept[1] <= 0.2 and 0.2 <= slept[2] <= 0.4
    assert slept[3] == 1.5


async def test_long_retry_after_is_not_waited_for() -> None:
    small = ScriptedBackend("small", UpstreamStatusError(429, {}, headers={"retry-after": "60"}))
    resilience, slept = harness(settings(fallback={"directions": []}), small, ScriptedBackend("large"))
    with pytest.raises(UpstreamStatusError) as caught:
        await call(resilience, RequestOutcome("r"))
    assert caught.value.status == 429 and slept == []


async def test_client_errors_are_neither_retried_nor_fallen_back() -> None:
    small = ScriptedBackend("small", UpstreamStatusError(400, {"error": {"message": "bad"}}))
    large = ScriptedBackend("large")
    resilience, _ = harness(settings(), small, large)
    with pytest.raises(UpstreamStatusError):
        await call(resilience, RequestOutcome("r"))
    assert (small.calls, large.calls) == (1, 0)


async def test_falls_back_to_the_other_tier_after_retries() -> None:
    small = ScriptedBackend("small", *[UpstreamError("down", kind="connect")] * 3)
    large = ScriptedBackend("large")
    resilience, _ = harness(settings(), small, large)
    outcome = RequestOutcome("r")
    assert await call(resilience, outcome) == {"answered_by": "large"}
    assert outcome.fallback and outcome.retries == 2
    assert outcome.decision is not None and (outcome.decision.tier, outcome.decision.reason) == ("large", "fallback")


async def test_timeouts_fall_back_without_retrying() -> None:
    small = ScriptedBackend("small", UpstreamTimeoutError("slow"))
    large = ScriptedBackend("large")
    resilience, slept = harness(settings(), small, large)
    outcome = RequestOutcome("r")
    assert await call(resilience, outcome) == {"answered_by": "large"}
    assert (small.calls, slept) == (1, [])


async def test_fallback_direction_is_configurable() -> None:
    large = ScriptedBackend("large", UpstreamError("down", kind="connect"))
    small = ScriptedBackend("small")
    config = settings(retry={"attempts": 1}, fallback={"directions": ["small->large"]})
    resilience, _ = harness(config, small, large)
    with pytest.raises(UpstreamError):
        await call(resilience, RequestOutcome("r"), tier="large", reason="score_above_threshold")
    assert small.calls == 0


async def test_explicit_model_does_not_fall_back_unless_configured() -> None:
    small = ScriptedBackend("small", UpstreamError("down", kind="connect"))
    resilience, _ = harness(settings(retry={"attempts": 1}), small, ScriptedBackend("large"))
    with pytest.raises(UpstreamError):
        await call(resilience, RequestOutcome("r"), reason="explicit_model")


async def test_open_breaker_skips_the_tier_and_falls_back() -> None:
    small = ScriptedBackend("small", *[UpstreamStatusError(502, {})] * 10)
    large = ScriptedBackend("large")
    config = settings(retry={"attempts": 1}, breaker={"failure_threshold": 2, "reset_after_s": 60})
    resilience, _ = harness(config, small, large)
    for _ in range(2):
        await call(resilience, RequestOutcome("r"))
    assert resilience.breakers["small"].state == "open"
    calls = small.calls
    await call(resilience, RequestOutcome("r"))
    assert small.calls == calls  # not even tried
    assert large.calls == 3


async def test_key_limited_to_one_tier_never_reaches_the_other() -> None:
    small = ScriptedBackend("small", UpstreamError("down", kind="connect"))
    large = ScriptedBackend("large")
    resilience, _ = harness(settings(retry={"attempts": 1}), small, large)
    outcome = RequestOutcome("r")
    outcome.principal = Principal("k", tiers=frozenset({"small"}))
    with pytest.raises(UpstreamError):
        await call(resilience, outcome)
    assert large.calls == 0
    outcome = RequestOutcome("r")
    outcome.principal = Principal("k", tiers=frozenset({"small"}))
    with pytest.raises(PermissionDeniedError):
        await call(resilience, outcome, tier="large", reason="explicit_model")
    routed = RequestOutcome("r")
    routed.principal = Principal("k", tiers=frozenset({"small"}))
    assert await call(resilience, routed, tier="large", reason="score_above_threshold") == {"answered_by": "small"}


async def test_upstream_auth_failure_is_hidden_from_the_client() -> None:
    body = {"error": {"message": "Incorrect API key provided: sk-abc***wxyz", "type": "invalid_request_error"}}
    small = ScriptedBackend("small", UpstreamStatusError(401, body))
    resilience, _ = harness(settings(fallback={"directions": []}), small, ScriptedBackend("large"))
    with pytest.raises(UpstreamError) as caught:
        await call(resilience, RequestOutcome("r"))
    assert caught.value.status == 502 and "sk-" not in caught.value.message and small.calls == 1


def test_request_shape_limits_name_the_param() -> None:
    limits = LimitSettings(max_messages=2, max_total_chars=10, max_tokens={"small": 100})
    with pytest.raises(InvalidRequestError) as caught:
        check_request({"messages": [{"role": "user", "content": "a"}] * 3}, limits)
    assert caught.value.param == "messages"
    with pytest.raises(InvalidRequestError):
        check_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 11}]}]}, limits)
    with pytest.raises(InvalidRequestError) as caught:
        check_max_tokens({"max_completion_tokens": 101}, "small", limits)
    assert caught.value.param == "max_completion_tokens"
    check_max_tokens({"max_tokens": 10**6}, "large", limits)
    assert message_chars([{"a": ["xy", {"b": "z"}]}]) == 3


def test_depth_limit_counts_levels_exactly_and_characters_match_message_chars() -> None:
    limits = LimitSettings(max_depth=4)
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello", "n": 1, "x": None, "y": "ab"}]}]
    assert check_request({"messages": messages}, limits) == message_chars(messages) == 15  # 4 levels deep
    with pytest.raises(InvalidRequestError) as caught:
        check_request({"messages": messages, "metadata": {"a": {"b": {"c": {"d": {"e": "five"}}}}}}, limits)
    assert caught.value.param == "metadata"
    check_request({"metadata": {"a": {"b": {"c": {"d": "four levels"}}}}}, limits)
    with pytest.raises(InvalidRequestError):
        check_request({"messages": [{"content": [{"x": [["too deep"]]}]}]}, limits)


async def test_rate_limiter_refuses_then_refills() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock)
    rule = Rule(requests_per_minute=2)
    assert await limiter.acquire("k", rule, 1) == 0
    assert await limiter.acquire("k", rule, 1) == 0
    wait = await limiter.acquire("k", rule, 1)
    assert 29 < wait <= 30
    assert await limiter.acquire("other", rule, 1) == 0
    clock.now += 30
    assert await limiter.acquire("k", rule, 1) == 0


async def test_token_budget_goes_into_debt_after_real_usage() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock=clock)
    rule = Rule(tokens_per_minute=600)
    assert await limiter.acquire("k", rule, 100) == 0
    limiter.settle("k", rule, 900)  # the request really used 1000 tokens
    wait = await limiter.acquire("k", rule, 1)
    assert wait == pytest.approx(40.1)  # 400 tokens of debt + 1, at 10 tokens/s


async def test_bulkhead_queues_then_refuses() -> None:
    bulkhead = Bulkhead("b", limit=1, queue=1, wait_s=5)
    release = await bulkhead.acquire()
    waiter = asyncio.ensure_future(bulkhead.acquire())
    await asyncio.sleep(0)
    with pytest.raises(BackendOverloadedError):
        await bulkhead.acquire()
    release()
    release()  # idempotent
    (await waiter)()
    assert not bulkhead._slots.locked()  # type: ignore[union-attr]
