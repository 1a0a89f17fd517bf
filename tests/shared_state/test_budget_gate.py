"""The budget gate without HTTP: Redis down -> local counters (fail_open) or 503 (fail_closed); settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.accounting import RequestOutcome
from gateway.admission.auth import Principal
from gateway.errors import GatewayError
from gateway.pricing import PriceTable
from gateway.settings import BreakerSettings, BudgetSettings, ConfigError, Price, StateSettings, load_settings
from gateway.shared_state.base import InsufficientQuotaError, Shield
from gateway.shared_state.budgets import BudgetGate
from gateway.shared_state.redis_client import connect
from gateway.shared_state.spend import RedisSpendStore
from routers.base import RouteDecision
from tests.support.redis_server import RedisServer

BODY = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 10}
PRICES = PriceTable({"big": Price(prompt=1_000_000, completion=1_000_000)})  # 1 USD per token


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = connect(StateSettings(backend="redis", redis_url=redis_server.url, timeout_s=0.2))
    yield client
    await client.aclose()


def gate(redis: Redis, fail_open: bool) -> BudgetGate:
    settings = BudgetSettings.model_validate({"keys": {"alice": {"daily_usd": 30}}})
    shield = Shield(0.2, BreakerSettings(failure_threshold=1, reset_after_s=60))
    return BudgetGate(settings, RedisSpendStore(redis, shield, "g:"), PRICES, {"large": "big", "small": "big"},
                      fail_open=fail_open)


def outcome() -> RequestOutcome:
    out = RequestOutcome(request_id="r")
    out.principal = Principal("alice")
    return out


async def test_redis_down_fails_open_onto_local_budget_counters(redis: Redis, redis_server: RedisServer) -> None:
    budgets = gate(redis, fail_open=True)
    redis_server.stop()
    decision = RouteDecision("large", "fixed")
    # 11 prompt + 10 completion tokens = 21 USD reserved each; a cap refuses once reserved reaches it (42 >= 30).
    assert await budgets.check(BODY, outcome(), decision) == decision
    assert await budgets.check(BODY, outcome(), decision) == decision
    with pytest.raises(InsufficientQuotaError):
        await budgets.check(BODY, outcome(), decision)


async def test_redis_down_fails_closed_with_503(redis: Redis, redis_server: RedisServer) -> None:
    budgets = gate(redis, fail_open=False)
    redis_server.stop()
    with pytest.raises(GatewayError) as refused:
        await budgets.check(BODY, outcome(), RouteDecision("large", "fixed"))
    assert refused.value.status == 503 and refused.value.code == "shared_state_unavailable"


def test_state_and_budget_settings_are_validated(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "c.yaml"  # type: ignore[operator]
    tiers = "tiers: {small: {kind: openai, model: a}, large: {kind: openai, model: b}}\n"
    path.write_text(tiers + "state: {backend: redis, on_failure: fail_open}\nbudgets: {keys: {k: {daily_usd: 1}}}\n")
    assert load_settings(path).state.backend == "redis"
    for bad in ("state: {backend: memcached}", "state: {on_failure: retry}", "budgets: {keys: {k: {daily_usd: -1}}}",
                "state: {redis_password: x}", "server: {workers: 0}",
                "budgets: {keys: {k: {team: nobody}}}"):
        path.write_text(tiers + bad + "\n")
        with pytest.raises(ConfigError):
            load_settings(path)
