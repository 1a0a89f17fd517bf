"""Upstream faults on loopback: retries before the first byte, Retry-After, fallback, timeouts, drops, breakers."""

from __future__ import annotations

import time
from typing import Any

import httpx

from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.errors import BackendOverloadedError, UpstreamError
from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.fault_doubles import LocalDouble, Outcomes, closed_port_url
from tests.support.gateway import LARGE_MODEL, running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**BODY, "stream": True}
FAST_RETRY = {"base_delay_s": 0.01, "max_delay_s": 0.05}
NO_FALLBACK = {"retry": FAST_RETRY, "fallback": {"directions": []}}


def post(url: str, body: dict[str, Any], timeout: float = 10) -> httpx.Response:
    return httpx.post(url + CHAT, json=body, timeout=timeout)


def test_server_error_is_retried_and_answered_once(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=500))
    outcomes = Outcomes()
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK)  # type: ignore[attr-defined]
    with running_gateway(settings, sinks=[outcomes]) as gateway:
        answer = post(gateway.url, BODY)
    assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
    assert answer.headers["x-tiergate-tier"] == "small"
    assert len(fake_upstream.received) == 2
    assert len(outcomes.items) == 1 and outcomes.items[0].retries == 1 and not outcomes.items[0].fallback


def test_stream_is_retried_before_the_first_byte(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=503))
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        answer = post(gateway.url, STREAM)
    assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n") and '"error"' not in answer.text
    assert len(fake_upstream.received) == 2


def test_retries_exhausted_tell_the_client_not_to_retry(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(*[Reply(status=502)] * 3)
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        answer = post(gateway.url, BODY)
    assert answer.status_code == 502 and answer.json()["error"]["message"]
    assert answer.headers["x-should-retry"] == "false"
    assert len(fake_upstream.received) == 3


def test_rate_limit_waits_for_retry_after_then_succeeds(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=429, headers={"retry-after": "1"}))
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        started = time.monotonic()
        answer = post(gateway.url, BODY)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200 and elapsed >= 0.95
    assert len(fake_upstream.received) == 2


def test_rate_limit_beyond_the_wait_budget_goes_to_the_client(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=429, headers={"retry-after": "30"}))
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        started = time.monotonic()
        answer = post(gateway.url, BODY)
    assert time.monotonic() - started < 2
    assert answer.status_code == 429 and answer.headers["retry-after"] == "30"
    assert len(fake_upstream.received) == 1


def test_connection_refused_falls_back_to_the_other_tier(fake_upstream: FakeUpstream) -> None:
    outcomes = Outcomes()
    settings = upstream_settings(fake_upstream.url, resilience={"retry": FAST_RETRY},  # type: ignore[attr-defined]
                                 tier_overrides={"small": {"base_url": closed_port_url() + "/v1"}})
    with running_gateway(settings, sinks=[outcomes]) as gateway:
        answer = post(gateway.url, BODY)
        streamed = post(gateway.url, STREAM)
    for response in (answer, streamed):
        assert response.status_code == 200
        assert (response.headers["x-tiergate-tier"], response.headers["x-tiergate-reason"]) == ("large", "fallback")
        assert response.headers["x-tiergate-model"] == LARGE_MODEL
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert [o.fallback for o in outcomes.items] == [True, True]
    assert [o.tier for o in outcomes.items] == ["large", "large"]


def test_hang_past_read_timeout_is_504_without_fallback(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(delay=1.2))
    fast = {"timeout": {"connect": 1, "read": 0.5, "write": 1, "pool": 1}}
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK,  # type: ignore[attr-defined]
                                 tier_overrides={"small": fast})
    with running_gateway(settings) as gateway:
        started = time.monotonic()
        answer = post(gateway.url, BODY)
    assert answer.status_code == 504 and time.monotonic() - started < 2.5
    assert len(fake_upstream.received) == 1  # a timeout is not retried: the upstream may still be working


def test_hang_past_read_timeout_falls_back(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(delay=1.2))
    fast = {"timeout": {"connect": 1, "read": 0.5, "write": 1, "pool": 1}}
    settings = upstream_settings(fake_upstream.url, resilience={"retry": FAST_RETRY},  # type: ignore[attr-defined]
                                 tier_overrides={"small": fast})
    with running_gateway(settings) as gateway:
        answer = post(gateway.url, STREAM)
    assert answer.status_code == 200 and answer.headers["x-tiergate-tier"] == "large"
    assert answer.text.endswith("data: [DONE]\n\n")


def test_stream_dropped_after_first_byte_ends_in_band_without_retry(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(drop_after=2))
    outcomes = Outcomes()
    settings = upstream_settings(fake_upstream.url, resilience={"retry": FAST_RETRY})  # type: ignore[attr-defined]
    with running_gateway(settings, sinks=[outcomes]) as gateway:
        answer = post(gateway.url, STREAM)
        deadline = time.monotonic() + 3
        while not outcomes.items and time.monotonic() < deadline:
            time.sleep(0.01)
    assert answer.status_code == 200
    events = [line[6:] for line in answer.text.split("\n") if line.startswith("data: ")]
    assert '"error"' in events[-2] and events[-1] == "[DONE]"
    assert len(fake_upstream.received) == 1
    assert len(outcomes.items) == 1 and outcomes.items[0].outcome == "upstream_error"
    assert outcomes.items[0].retries == 0 and not outcomes.items[0].fallback


def test_breaker_opens_then_closes_after_a_good_trial(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=500), Reply(status=500))
    resilience = {**NO_FALLBACK, "retry": {"attempts": 1}, "breaker": {"failure_threshold": 2, "reset_after_s": 0.5}}
    settings = upstream_settings(fake_upstream.url, resilience=resilience)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        assert [post(gateway.url, BODY).status_code for _ in range(2)] == [502, 502]
        shed = post(gateway.url, BODY)
        assert shed.status_code == 503 and shed.json()["error"]["code"] == "upstream_error"
        assert len(fake_upstream.received) == 2  # open: the upstream was not called
        time.sleep(0.6)
        assert post(gateway.url, BODY).status_code == 200  # the half-open trial succeeds
        assert post(gateway.url, BODY).status_code == 200
        assert gateway.app.state.gateway.service.resilience.breakers["small"].state == "closed"  # type: ignore[attr-defined]


def test_open_breaker_sends_traffic_to_the_fallback_tier(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=500))
    resilience = {"retry": {"attempts": 1}, "breaker": {"failure_threshold": 1, "reset_after_s": 60}}
    settings = upstream_settings(fake_upstream.url, resilience=resilience)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        first = post(gateway.url, BODY)  # small fails, opens its breaker; large answers
        second = post(gateway.url, BODY)  # small is skipped outright
    assert [first.headers["x-tiergate-reason"], second.headers["x-tiergate-reason"]] == ["fallback", "fallback"]
    assert first.status_code == second.status_code == 200
    models = [r.body["model"] for r in fake_upstream.received]
    assert models == ["gpt-4o-mini", "gpt-4o", "gpt-4o"]



def test_local_backend_failure_falls_back_to_the_large_tier(fake_upstream: FakeUpstream) -> None:
    resilience = {"retry": FAST_RETRY, "breaker": {"failure_threshold": 100}}
    settings = upstream_settings(fake_upstream.url, resilience=resilience)  # type: ignore[attr-defined]
    local = LocalDouble(error=UpstreamError("local generation failed: out of memory", kind="local"))
    backends = {"small": local, "large": OpenAIHTTPBackend("large", settings.tiers["large"])}  # type: ignore[arg-type]
    with running_gateway(settings, backends=backends) as gateway:
        answer = post(gateway.url, BODY)
        streamed = post(gateway.url, STREAM)
        local.error = BackendOverloadedError("local model is busy")
        busy = post(gateway.url, BODY)
        local.error = None
        healthy = post(gateway.url, BODY)
    for response in (answer, streamed, busy):
        assert response.status_code == 200
        assert (response.headers["x-tiergate-tier"], response.headers["x-tiergate-reason"]) == ("large", "fallback")
    assert healthy.headers["x-tiergate-tier"] == "small" and healthy.json()["model"] == "local-tiny"
    assert local.calls >= 4 and len(fake_upstream.received) == 3


def test_local_backend_down_without_fallback_is_an_openai_shaped_error(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, resilience=NO_FALLBACK)  # type: ignore[attr-defined]
    local = LocalDouble(error=BackendOverloadedError("local model is busy", headers={"retry-after": "1"}))
    backends = {"small": local, "large": OpenAIHTTPBackend("large", settings.tiers["large"])}  # type: ignore[arg-type]
    with running_gateway(settings, router=FixedRouter(0.1), backends=backends) as gateway:
        answer = post(gateway.url, BODY)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert local.calls == 1  # a full queue is not retried in place


def test_classifier_breaker_stops_calling_a_broken_classifier(fake_upstream: FakeUpstream) -> None:
    router = FixedRouter(fail=True)
    resilience = {"classifier_breaker": {"failure_threshold": 2, "reset_after_s": 60}}
    settings = upstream_settings(fake_upstream.url, resilience=resilience)  # type: ignore[attr-defined]
    with running_gateway(settings, router=router) as gateway:
        answers = [post(gateway.url, BODY) for _ in range(4)]
    assert all(a.status_code == 200 for a in answers)
    assert {a.headers["x-tiergate-reason"] for a in answers} == {"classifier_error"}
    assert {a.headers["x-tiergate-tier"] for a in answers} == {"large"}  # the fail-safe tier
    assert len(router.seen) == 2


def test_slow_classifier_times_out_to_the_fail_safe_tier(fake_upstream: FakeUpstream) -> None:
    router = FixedRouter(0.1, delay=1.0)
    routing = {"classifier": {"timeout_s": 0.1}, "fail_safe_tier": "small"}
    settings = upstream_settings(fake_upstream.url, routing=routing)  # type: ignore[attr-defined]
    with running_gateway(settings, router=router) as gateway:
        answer = post(gateway.url, BODY)
    assert answer.status_code == 200
    assert (answer.headers["x-tiergate-tier"], answer.headers["x-tiergate-reason"]) == ("small", "classifier_error")


def test_full_classifier_queue_uses_the_fail_safe_tier_without_tripping_the_breaker(
        fake_upstream: FakeUpstream) -> None:
    from routers.errors import ClassifierOverloadedError

    class Overloaded(FixedRouter):
        async def score(self, text: str) -> float:
            self.seen.append(text)
            raise ClassifierOverloadedError("classifier queue is full")

    router = Overloaded()
    resilience = {"classifier_breaker": {"failure_threshold": 1, "reset_after_s": 60}}
    settings = upstream_settings(fake_upstream.url, resilience=resilience)  # type: ignore[attr-defined]
    with running_gateway(settings, router=router) as gateway:
        answers = [post(gateway.url, BODY) for _ in range(3)]
    assert [a.headers["x-tiergate-reason"] for a in answers] == ["classifier_error"] * 3
    assert len(router.seen) == 3  # still asked each time: busy is not broken
