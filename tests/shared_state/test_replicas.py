"""Two gateway processes sharing one real Redis: one key's limit and budget, cross-replica downgrade, Redis loss."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream
from tests.support.gateway_process import GatewayProcess, process_config
from tests.support.prom import sample
from tests.support.redis_server import RedisServer

CHAT = "/v1/chat/completions"
# One long word: the gateway's estimate (41 chars -> 11 tokens) is above what the fake reports (1 + 3), so a
# reservation never under-counts; the fake answers 5 completion tokens.
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "x" * 41}], "max_tokens": 5}
LARGE_COST = (4 * 2.50 + 5 * 10.00) * 1e-6
KEYS = {"keys": [{"name": "alice", "hash": hash_key("key-alice")}, {"name": "bob", "hash": hash_key("key-bob")}]}
HEADERS = {"authorization": "Bearer key-alice"}


def redis_state(server: RedisServer, on_failure: str = "fail_open") -> dict[str, Any]:
    return {"backend": "redis", "redis_url": server.url, "timeout_s": 0.2, "on_failure": on_failure,
            "breaker": {"failure_threshold": 2, "reset_after_s": 0.5}}


@pytest.fixture
def replicas(request: pytest.FixtureRequest, fake_upstream: FakeUpstream, redis_server: RedisServer,
             tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    sections: dict[str, Any] = request.param
    config = process_config(fake_upstream.url, auth=KEYS, state=redis_state(redis_server),  # type: ignore[attr-defined]
                            **sections)
    started: list[GatewayProcess] = []
    try:
        for _ in range(2):
            started.append(GatewayProcess(tmp_path, config).start())
        yield started
    finally:
        for gateway in started:
            gateway.stop()


def chat(url: str, headers: dict[str, str] = HEADERS, **extra: Any) -> httpx.Response:
    return httpx.post(url + CHAT, json={**BODY, **extra}, headers=headers, timeout=10)


def burst(gateways: list[GatewayProcess], count: int, concurrency: int = 8) -> list[httpx.Response]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda i: chat(gateways[i % len(gateways)].url), range(count)))


@pytest.mark.parametrize("replicas", [{"limits": {"requests_per_minute": 20}}], indirect=True)
def test_two_replicas_enforce_one_requests_per_minute_limit(replicas: list[GatewayProcess]) -> None:
    responses = burst(replicas, 60)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == 60
    # 20 per minute, both replicas together; a burst taking up to 3 s may see one more slot refill.
    assert 20 <= len(ok) <= 21
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("replicas", [{"budgets": {"keys": {"alice": {"daily_usd": 10.5 * LARGE_COST}}}}],
                         indirect=True)
def test_two_replicas_enforce_one_budget_within_one_request(replicas: list[GatewayProcess]) -> None:
    during = burst(replicas, 60)
    admitted = sum(1 for r in during if r.status_code == 200)
    assert admitted <= 11  # concurrent requests on both replicas never overshoot by more than one request
    assert all(r.status_code in (200, 429) for r in during)
    # Sequentially, to the cap: exactly 11 requests fit (10.5 requests' worth, the last one may overshoot).
    for i in range(20):
        response = chat(replicas[i % 2].url)
        if response.status_code != 200:
            break
        admitted += 1
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
    assert admitted == 11
    time.sleep(0.3)
    for gateway in replicas:
        body = httpx.get(gateway.url + "/v1/tiergate/usage", headers=HEADERS, timeout=5).json()
        assert body["scopes"][0]["daily"]["spent_usd"] == pytest.approx(11 * LARGE_COST, rel=1e-6)


@pytest.mark.parametrize("replicas", [{"budgets": {"keys": {"alice": {"large_daily_usd": 2.5 * LARGE_COST}}}}],
                         indirect=True)
def test_a_large_budget_spent_on_one_replica_downgrades_routing_on_the_other(
        replicas: list[GatewayProcess]) -> None:
    first, second = replicas
    assert [chat(first.url).headers["x-tiergate-tier"] for _ in range(3)] == ["large"] * 3
    time.sleep(0.2)
    other = chat(second.url)
    explicit = chat(second.url, model="gpt-4o")
    bob = chat(second.url, headers={"authorization": "Bearer key-bob"})
    assert other.status_code == 200
    assert (other.headers["x-tiergate-tier"], other.headers["x-tiergate-reason"]) == ("small", "budget")
    assert explicit.status_code == 429 and explicit.json()["error"]["type"] == "insufficient_quota"
    assert bob.headers["x-tiergate-tier"] == "large"


def load_while(gateway: GatewayProcess, stop: threading.Event, out: list[int | str]) -> None:
    """Requests one after another until ``stop``; a hang shows up as a timeout, not as a stuck test."""
    with httpx.Client(timeout=3) as client:
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                out.append(client.post(gateway.url + CHAT, json=BODY, headers=HEADERS).status_code)
            except httpx.TimeoutException:
                out.append("timeout")
            time.sleep(0.01)


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_redis_killed_mid_load_fails_open_or_closed_and_recovers(
        mode: str, fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path) -> None:
    config = process_config(fake_upstream.url, auth=KEYS, state=redis_state(redis_server, mode),  # type: ignore[attr-defined]
                            limits={"requests_per_minute": 100_000})
    gateway = GatewayProcess(tmp_path, config).start()
    stop = threading.Event()
    before: list[int | str] = []
    during: list[int | str] = []
    after: list[int | str] = []
    try:
        for phase, seconds in ((before, 0.5), (during, 1.5)):
            worker = threading.Thread(target=load_while, args=(gateway, stop, phase))
            worker.start()
            if phase is during:
                redis_server.stop()  # SIGKILL while requests are in flight
            time.sleep(seconds)
            stop.set()
            worker.join(timeout=10)
            stop.clear()
        down = httpx.get(gateway.url + "/metrics", timeout=5).text
        redis_server.start()
        time.sleep(0.7)  # the breaker lets a trial call through after reset_after_s
        worker = threading.Thread(target=load_while, args=(gateway, stop, after))
        worker.start()
        time.sleep(0.5)
        stop.set()
        worker.join(timeout=10)
        up = httpx.get(gateway.url + "/metrics", timeout=5).text
    finally:
        stop.set()
        gateway.stop()
    assert before and set(before) == {200}
    assert "timeout" not in during and len(during) > 10
    if mode == "fail_open":
        assert set(during) == {200}  # served on local limits
    else:
        assert during[-1] == 503 and set(during) <= {200, 503}  # the in-flight ones may still pass
    assert sample(down, "tiergate_shared_state_failures_total", operation="rate_limit") > 0
    assert sample(down, "tiergate_shared_state_up") == 0
    assert after and after[-1] == 200 and "timeout" not in after
    assert sample(up, "tiergate_shared_state_up") == 1
