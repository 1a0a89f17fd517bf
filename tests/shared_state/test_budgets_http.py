"""Spend caps end to end on loopback (memory and Redis backends): downgrade, insufficient_quota, usage, metrics."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, running_gateway, upstream_settings
from tests.support.prom import sample
from tests.support.redis_server import RedisServer

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}
# What the fake upstream reports for BODY: 4 prompt + 5 completion tokens.
LARGE_COST = (4 * 2.50 + 5 * 10.00) * 1e-6
SMALL_COST = (4 * 0.15 + 5 * 0.60) * 1e-6


def keyed_settings(upstream: str, state: dict[str, Any], budgets: dict[str, Any]) -> Any:
    auth = {"keys": [{"name": "alice", "hash": hash_key("key-alice")}, {"name": "bob", "hash": hash_key("key-bob")},
                     {"name": "carol", "hash": hash_key("key-carol")}]}
    return upstream_settings(upstream, auth=auth, state=state, budgets=budgets)


def chat(url: str, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(url + CHAT, json={**BODY, **extra}, headers={"authorization": f"Bearer {key}"}, timeout=10)


def usage(url: str, key: str) -> dict[str, Any]:
    response = httpx.get(url + "/v1/tiergate/usage", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {"backend": "memory"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"backend": "redis", "redis_url": server.url}


def test_spent_large_budget_downgrades_routing_then_spent_budget_refuses(
        fake_upstream: FakeUpstream, state: dict[str, Any]) -> None:
    budgets = {"keys": {"alice": {"large_daily_usd": 2.5 * LARGE_COST, "daily_usd": 3 * LARGE_COST + 4.5 * SMALL_COST},
                        "bob": {"daily_usd": 1.0}}}
    settings = keyed_settings(fake_upstream.url, state, budgets)  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.9)) as gateway:
        first = [chat(gateway.url, "key-alice") for _ in range(3)]
        assert [r.headers["x-tiergate-tier"] for r in first] == ["large"] * 3
        downgraded = chat(gateway.url, "key-alice")
        explicit = chat(gateway.url, "key-alice", model=LARGE_MODEL)
        smalls = [chat(gateway.url, "key-alice") for _ in range(6)]
        other = chat(gateway.url, "key-bob")  # another key's budget is untouched
        time.sleep(0.2)  # commits are queued after each answer
        alice = usage(gateway.url, "key-alice")
        metrics = httpx.get(gateway.url + "/metrics").text
    assert downgraded.status_code == 200
    assert downgraded.headers["x-tiergate-tier"] == "small" and downgraded.headers["x-tiergate-reason"] == "budget"
    assert explicit.status_code == 429
    assert explicit.json()["error"]["type"] == "insufficient_quota"
    assert explicit.json()["error"]["code"] == "insufficient_quota"
    assert [r.status_code for r in smalls] == [200] * 4 + [429] * 2  # 4.5 small requests fit: 1 + 4
    assert smalls[-1].json()["error"]["code"] == "insufficient_quota"
    assert other.status_code == 200 and other.headers["x-tiergate-tier"] == "large"
    (scope,) = alice["scopes"]
    assert scope["name"] == "alice" and scope["kind"] == "key"
    assert scope["daily"]["spent_usd"] == pytest.approx(3 * LARGE_COST + 5 * SMALL_COST, rel=1e-6)
    assert scope["large_daily"]["remaining_usd"] == 0
    assert scope["daily"]["remaining_usd"] == 0
    assert sample(metrics, "tiergate_budget_actions_total", key="alice", action="downgraded") == 5
    assert sample(metrics, "tiergate_budget_actions_total", key="alice", action="refused") == 3
    assert sample(metrics, "tiergate_key_cost_usd_total", key="alice") == pytest.approx(
        3 * LARGE_COST + 5 * SMALL_COST, rel=1e-6)
    assert sample(metrics, "tiergate_key_requests_total", key="bob") == 1


def test_a_team_budget_is_shared_by_its_keys(fake_upstream: FakeUpstream, state: dict[str, Any]) -> None:
    budgets = {"keys": {"alice": {"team": "research"}, "carol": {"team": "research"}},
               "teams": {"research": {"monthly_usd": 1.5 * LARGE_COST}}}
    settings = keyed_settings(fake_upstream.url, state, budgets)  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.9)) as gateway:
        assert chat(gateway.url, "key-alice").status_code == 200
        assert chat(gateway.url, "key-carol").status_code == 200
        refused = chat(gateway.url, "key-alice")
        free = chat(gateway.url, "key-bob")  # not in the team, no budget
        time.sleep(0.2)
        carol = usage(gateway.url, "key-carol")
    assert refused.status_code == 429 and free.status_code == 200
    assert [s["kind"] for s in carol["scopes"]] == ["key", "team"]
    assert carol["scopes"][1]["monthly"]["spent_usd"] == pytest.approx(2 * LARGE_COST, rel=1e-6)


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def test_budget_never_downgrades_to_a_tier_that_lacks_what_the_request_needs(fake_upstream: FakeUpstream) -> None:
    budgets = {"keys": {"alice": {"large_daily_usd": 0.0}}}
    settings = upstream_settings(
        fake_upstream.url,  # type: ignore[attr-defined]
        auth={"keys": [{"name": "alice", "hash": hash_key("key-alice")}]}, state={"backend": "memory"},
        budgets=budgets, tier_overrides={"small": {"capabilities": {"tools": False}}})
    with running_gateway(settings, router=FixedRouter(0.1)) as gateway:
        plain = chat(gateway.url, "key-alice")
        with_tools = chat(gateway.url, "key-alice", tools=TOOLS)
    assert plain.status_code == 200 and plain.headers["x-tiergate-tier"] == "small"
    # Steering sends the tools request to large (small lacks tools); the spent large budget cannot move it back.
    assert with_tools.status_code == 429
    error = with_tools.json()["error"]
    assert error["type"] == "insufficient_quota" and "tools" in error["message"]
