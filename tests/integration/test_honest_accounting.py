"""Accounting is never optimistic: a stream abandoned before its usage chunk still counts, flagged as estimated."""

from __future__ import annotations

import time

import httpx

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.fault_doubles import Outcomes
from tests.support.gateway import running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
PROMPT_CHARS = 40_000  # about 10,000 tokens by the gateway's estimate


def abandon_after_first_chunk(url: str, body: dict[str, object]) -> int:
    with httpx.Client(timeout=10) as client, client.stream("POST", url + CHAT, json=body) as response:
        if response.status_code == 200:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    break  # seen the first chunk; hang up long before the usage chunk
        return response.status_code


def wait_for(outcomes: Outcomes, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(outcomes.items) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_abandoned_streams_cannot_bypass_the_token_limit(fake_upstream: FakeUpstream) -> None:
    outcomes = Outcomes()
    settings = upstream_settings(fake_upstream.url, limits={"tokens_per_minute": 5000})  # type: ignore[attr-defined]
    body = {"model": "tiergate-auto", "stream": True, "messages": [{"role": "user", "content": "x" * PROMPT_CHARS}]}
    for _ in range(4):
        fake_upstream.push(Reply(chunks=50, chunk_delay=0.05))  # usage would come after 2.5 s
    with running_gateway(settings, sinks=[outcomes]) as gateway:
        first = abandon_after_first_chunk(gateway.url, body)
        wait_for(outcomes, 1)
        second = abandon_after_first_chunk(gateway.url, body)
        wait_for(outcomes, 2)
    assert first == 200
    assert second == 429, "the abandoned stream's tokens were refunded"
    abandoned = outcomes.items[0]
    assert abandoned.outcome == "client_disconnected"
    assert abandoned.usage_estimated
    assert abandoned.prompt_tokens >= PROMPT_CHARS // 4
    assert abandoned.cost_usd > 0
    assert len(fake_upstream.received) == 1


def test_real_usage_is_not_flagged_as_estimated(fake_upstream: FakeUpstream) -> None:
    outcomes = Outcomes()
    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    body = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello there"}]}
    with running_gateway(settings, sinks=[outcomes]) as gateway:
        answer = httpx.post(gateway.url + CHAT, json=body, timeout=10)
        fake_upstream.push(Reply(status=500), Reply(status=500), Reply(status=500), Reply(status=500),
                           Reply(status=500), Reply(status=500))
        failed = httpx.post(gateway.url + CHAT, json=body, timeout=10)
        wait_for(outcomes, 2)
    assert answer.status_code == 200 and failed.status_code == 502
    assert not outcomes.items[0].usage_estimated and outcomes.items[0].prompt_tokens == answer.json()["usage"][
        "prompt_tokens"]
    # An upstream that answered with an error status did no billable work: nothing is estimated.
    assert not outcomes.items[1].usage_estimated and outcomes.items[1].prompt_tokens == 0
