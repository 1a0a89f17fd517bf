"""Limits on loopback: body size, messages, characters, max_tokens per tier, per-key rates, backend concurrency."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + CHAT, json=body, timeout=10, **kwargs)


def test_request_shape_limits(fake_upstream: FakeUpstream) -> None:
    limits = {"max_messages": 3, "max_total_chars": 100, "max_tokens": {"small": 50, "large": 500}}
    server = {"max_body_bytes": 4096}
    settings = upstream_settings(fake_upstream.url, limits=limits, server=server)  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as gateway:
        huge = post(gateway.url, {**BODY, "messages": [{"role": "user", "content": "x" * 5000}]})
        many = post(gateway.url, {**BODY, "messages": [{"role": "user", "content": "hi"}] * 4})
        long = post(gateway.url, {**BODY, "messages": [{"role": "user", "content": "y" * 101}]})
        parts = post(gateway.url, {**BODY, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "z" * 60}, {"type": "text", "text": "z" * 60}]}]})
        ceiling = post(gateway.url, {**BODY, "max_tokens": 51})
        large_ok = post(gateway.url, {**BODY, "model": LARGE_MODEL, "max_completion_tokens": 400})
        ok = post(gateway.url, {**BODY, "max_tokens": 50})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    for response in (many, long, parts):
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert ceiling.status_code == 400 and ceiling.json()["error"]["param"] == "max_tokens"
    assert large_ok.status_code == 200 and ok.status_code == 200
    assert len(fake_upstream.received) == 2  # nothing refused reached the upstream


def test_requests_per_minute_per_key(fake_upstream: FakeUpstream) -> None:
    auth = {"keys": [{"name": "a", "hash": hash_key("tg-key-a-000000"), "requests_per_minute": 2},
                     {"name": "b", "hash": hash_key("tg-key-b-000000")}]}
    settings = upstream_settings(fake_upstream.url, auth=auth,  # type: ignore[attr-defined]
                                 limits={"requests_per_minute": 3})
    a = {"authorization": "Bearer tg-key-a-000000"}
    b = {"authorization": "Bearer tg-key-b-000000"}
    with running_gateway(settings) as gateway:
        first = [post(gateway.url, BODY, headers=a).status_code for _ in range(2)]
        limited = post(gateway.url, BODY, headers=a)
        others = [post(gateway.url, BODY, headers=b).status_code for _ in range(4)]
    assert first == [200, 200]
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 30
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert others == [200, 200, 200, 429]  # key b gets the default budget, counted apart from key a
    assert len(fake_upstream.received) == 5


def test_tokens_per_minute_counts_real_usage(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, limits={"tokens_per_minute": 60})  # type: ignore[attr-defined]
    words = " ".join(["word"] * 80)  # the fake counts one prompt token per word
    with running_gateway(settings) as gateway:
        first = post(gateway.url, {**BODY, "messages": [{"role": "user", "content": words}]})
        second = post(gateway.url, BODY)
    assert first.status_code == 200
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 20


def test_backend_concurrency_limit_with_a_bounded_queue(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(delay=1.0))
    tiers = {"small": {"max_concurrency": 1, "max_queue": 0}}
    settings = upstream_settings(fake_upstream.url, tier_overrides=tiers,  # type: ignore[attr-defined]
                                 resilience={"fallback": {"directions": []}})
    results: list[int] = []
    with running_gateway(settings) as gateway:
        slow = threading.Thread(target=lambda: results.append(post(gateway.url, BODY).status_code))
        slow.start()
        while not fake_upstream.received:
            threading.Event().wait(0.01)
        busy = post(gateway.url, BODY)
        slow.join()
        after = post(gateway.url, BODY)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "backend_overloaded"
    assert results == [200] and after.status_code == 200
