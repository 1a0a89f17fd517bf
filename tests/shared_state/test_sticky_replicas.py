"""Sticky tool loops across replicas: a pin written by one gateway is honoured by another through Redis."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings
from tests.support.redis_server import RedisServer

TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


def test_tool_loop_started_on_one_replica_continues_on_its_tier_on_another(
        redis_server: RedisServer, fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 state={"backend": "redis", "redis_url": redis_server.url})
    question = [{"role": "user", "content": "look this up"}]
    fake_upstream.push(Reply(tool_calls=[{"id": "call_shared", "name": "search", "arguments": "{}"}]))
    with running_gateway(settings, router=FixedRouter(0.1)) as first, \
            running_gateway(settings, router=FixedRouter(0.9)) as second:
        opened = httpx.post(first.url + "/v1/chat/completions", timeout=10,
                            json={"model": "tiergate-auto", "messages": question, "tools": TOOLS})
        assert opened.headers["x-tiergate-tier"] == "small"
        call = opened.json()["choices"][0]["message"]
        loop = [*question, call, {"role": "tool", "tool_call_id": "call_shared", "content": "found"}]
        continued = httpx.post(second.url + "/v1/chat/completions", timeout=10,
                               json={"model": "tiergate-auto", "messages": loop, "tools": TOOLS})
        fresh = httpx.post(second.url + "/v1/chat/completions", timeout=10,
                           json={"model": "tiergate-auto", "messages": question})
    assert (continued.headers["x-tiergate-tier"], continued.headers["x-tiergate-reason"]) == ("small", "sticky")
    assert fresh.headers["x-tiergate-tier"] == "large"  # the second replica's router would send it large
