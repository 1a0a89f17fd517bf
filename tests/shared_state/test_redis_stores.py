"""The Redis limiter, pin store, spend store and share window against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.admission.limits import MemoryRateLimiter, Rule
from gateway.errors import GatewayError
from gateway.settings import BreakerSettings, StateSettings
from gateway.shared_state.base import Caps, Scope, SharedStateUnavailable, Shield, SpendStore
from gateway.shared_state.limiter import RedisRateLimiter
from gateway.shared_state.pins import RedisPinStore
from gateway.shared_state.redis_client import connect
from gateway.shared_state.share import SharedShareController
from gateway.shared_state.spend import MemorySpendStore, RedisSpendStore
from tests.support.redis_server import RedisServer

DAY, MONTH = "2026-11-29", "2026-11"


def shield(timeout: float = 0.5, threshold: int = 3, reset: float = 0.3) -> Shield:
    return Shield(timeout, BreakerSettings(failure_threshold=threshold, reset_after_s=reset))


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = connect(StateSettings(backend="redis", redis_url=redis_server.url, timeout_s=0.5))
    yield client
    await client.aclose()


async def test_two_limiters_on_one_redis_share_one_budget_exactly(redis: Redis) -> None:
    first = RedisRateLimiter(redis, shield(), "t:")
    second = RedisRateLimiter(redis, shield(), "t:")
    rule = Rule(requests_per_minute=10)
    waits = await asyncio.gather(*((first if i % 2 else second).acquire("alice", rule, 1) for i in range(30)))
    assert sum(1 for w in waits if w == 0) == 10
    refused = [w for w in waits if w > 0]
    assert all(0 < w <= 6.1 for w in refused)  # one request refills in 6 s at 10/min
    assert await first.acquire("bob", rule, 1) == 0  # keys are separate


async def test_token_budget_goes_into_debt_and_settle_corrects_it(redis: Redis) -> None:
    limiter = RedisRateLimiter(redis, shield(), "t:")
    rule = Rule(tokens_per_minute=1000)
    assert await limiter.acquire("k", rule, 5000) == 0  # one large prompt is let through, into debt
    assert await limiter.acquire("k", rule, 1) > 0
    limiter.settle("k", rule, -4900)  # it really used 100 tokens
    await limiter.flush()
    assert await limiter.acquire("k", rule, 1) == 0


async def test_limiter_fails_open_to_local_buckets_or_closed_with_503(redis_server: RedisServer) -> None:
    client = connect(StateSettings(backend="redis", redis_url=redis_server.url, timeout_s=0.2))
    failures: list[str] = []
    guard = shield(timeout=0.2, threshold=2, reset=0.2)
    guard.on_failure = failures.append
    open_limiter = RedisRateLimiter(client, guard, "t:", fail_open=True, local=MemoryRateLimiter())
    closed_limiter = RedisRateLimiter(client, guard, "t:", fail_open=False)
    rule = Rule(requests_per_minute=2)
    redis_server.stop()
    try:
        assert [await open_limiter.acquire("k", rule, 1) for _ in range(3)][:2] == [0.0, 0.0]
        assert await open_limiter.acquire("k", rule, 1) > 0  # the local bucket still limits
        with pytest.raises(GatewayError) as refused:
            await closed_limiter.acquire("k", rule, 1)
        assert refused.value.status == 503
        assert guard.breaker.state == "open" and "rate_limit" in failures
        redis_server.start()
        await asyncio.sleep(0.25)  # the breaker lets a trial call through after reset_after_s
        assert await closed_limiter.acquire("fresh", rule, 1) == 0.0
        assert guard.breaker.state == "closed"
    finally:
        await client.aclose()


async def test_shield_times_out_a_slow_call_and_opens() -> None:
    guard = shield(timeout=0.05, threshold=1, reset=60)

    async def hang() -> None:
        await asyncio.sleep(5)

    with pytest.raises(SharedStateUnavailable):
        await guard.call("slow", hang)
    with pytest.raises(SharedStateUnavailable):  # open: refused at once, without waiting
        await guard.call("slow", hang)
    assert guard.failures == 2


async def test_pins_are_seen_by_another_store_and_expire(redis: Redis) -> None:
    one, two = RedisPinStore(redis, shield(), "t:"), RedisPinStore(redis, shield(), "t:")
    assert await two.get("conv-1") is None
    await one.put("conv-1", "large", ttl_s=0.3)
    assert await two.get("conv-1") == "large"
    await asyncio.sleep(0.4)
    assert await two.get("conv-1") is None


async def test_pins_fail_open_when_redis_is_down(redis_server: RedisServer) -> None:
    client = connect(StateSettings(backend="redis", redis_url=redis_server.url, timeout_s=0.2))
    store = RedisPinStore(client, shield(timeout=0.2), "t:")
    redis_server.stop()
    try:
        await store.put("c", "small", 10)
        assert await store.get("c") is None
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def spend_store(request: pytest.FixtureRequest) -> AsyncIterator[SpendStore]:
    if request.param == "memory":
        yield MemorySpendStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = connect(StateSettings(backend="redis", redis_url=server.url, timeout_s=0.5))
    yield RedisSpendStore(client, shield(), "t:")
    await client.aclose()


async def test_reservations_refuse_once_spent_plus_reserved_reaches_a_cap(spend_store: SpendStore) -> None:
    scopes = [Scope("key:a", Caps(daily=100, large_daily=40))]
    assert await spend_store.reserve(scopes, True, 30, DAY, MONTH) == "ok"
    assert await spend_store.reserve(scopes, True, 30, DAY, MONTH) == "ok"
    assert await spend_store.reserve(scopes, True, 30, DAY, MONTH) == "large_exhausted"  # 60 reserved >= 40
    assert await spend_store.reserve(scopes, False, 30, DAY, MONTH) == "ok"  # 90 reserved < 100
    assert await spend_store.reserve(scopes, False, 30, DAY, MONTH) == "ok"
    assert await spend_store.reserve(scopes, False, 30, DAY, MONTH) == "exhausted"  # 120 reserved >= 100
    await spend_store.commit(scopes, True, 30, True, 10, DAY, MONTH)  # a large request really cost 10
    spent = await spend_store.spend(scopes[0], DAY, MONTH)
    assert (spent.daily, spent.monthly, spent.large_daily, spent.large_monthly) == (10, 10, 10, 10)
    assert await spend_store.reserve(scopes, False, 1, DAY, MONTH) == "exhausted"  # 10 spent + 90 reserved
    await spend_store.commit(scopes, False, 30, False, 0, DAY, MONTH)  # a request that failed costs nothing
    assert await spend_store.reserve(scopes, False, 1, DAY, MONTH) == "ok"
    # Another day: the daily caps start over (only reservations carry), the month keeps counting.
    assert (await spend_store.spend(scopes[0], "2026-11-30", MONTH)).daily == 0
    assert (await spend_store.spend(scopes[0], "2026-11-30", MONTH)).monthly == 10


async def test_a_team_cap_refuses_every_member(spend_store: SpendStore) -> None:
    team = Scope("team:t", Caps(monthly=50))
    alice, bob = [Scope("key:alice", Caps()), team], [Scope("key:bob", Caps()), team]
    assert await spend_store.reserve(alice, False, 10, DAY, MONTH) == "ok"
    await spend_store.commit(alice, False, 10, False, 50, DAY, MONTH)
    assert await spend_store.reserve(bob, False, 1, DAY, MONTH) == "exhausted"
    assert (await spend_store.spend(Scope("key:bob", Caps()), DAY, MONTH)).monthly == 0


async def test_share_controllers_on_one_redis_steer_on_one_window(redis: Redis) -> None:
    one = SharedShareController(redis, shield(), "t:", target=0.5, window=100, sync_s=60)
    two = SharedShareController(redis, shield(), "t:", target=0.5, window=100, sync_s=60)
    for _ in range(40):
        one.observe(0.9)
    await one.sync()
    assert two.realised_share() == 0.0
    await two.sync()
    assert two.realised_share() == one.realised_share() > 0 and len(two.decisions.decisions) == 40
    for _ in range(40):
        two.observe(0.1)
    await two.sync()
    await one.sync()
    assert one.realised_share() == pytest.approx(one.decisions.large / 80) and len(one.decisions.decisions) == 80
    assert one.threshold() == two.threshold()
