"""GET /metrics on a running gateway: every documented family, and the numbers real requests leave behind."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.accounting import RequestOutcome
from gateway.telemetry.metrics import FAMILIES
from gateway.tools.fake_upstream import FakeUpstream, Reply, completion
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings
from tests.support.prom import families, sample

MESSAGES = [{"role": "user", "content": "please explain this"}]
CHAT = {"model": "tiergate-auto", "messages": MESSAGES}
MINI = {"tier": "small", "model": "gpt-4o-mini"}


class Recorder:
    """A sink that remembers every outcome it was handed."""

    def __init__(self) -> None:
        self.outcomes: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.outcomes.append(outcome)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def scrape(server: Any) -> str:
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def usage_reply(prompt: int, completion_tokens: int, cached: int = 0) -> Reply:
    body = completion({"model": "gpt-4o-mini"}, "ok")
    body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                     "total_tokens": prompt + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached}}
    return Reply(body=body)


def test_every_documented_family_is_exposed_after_one_request(fake_upstream: FakeUpstream) -> None:
    with running_gateway(upstream_settings(fake_upstream.url)) as server:  # type: ignore[attr-defined]
        assert httpx.post(server.url + "/v1/chat/completions", json=CHAT).status_code == 200
        exposed = families(scrape(server))
    for spec in FAMILIES:
        assert exposed.get(spec.name) == spec.kind, spec.name
    assert all(name.startswith("tiergate_") for name in exposed)


def test_known_usage_gives_tokens_cost_header_and_savings(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(usage_reply(1000, 500, cached=200))
    cost = (800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1e6
    counterfactual = (800 * 2.50 + 200 * 1.25 + 500 * 10.0) / 1e6
    with running_gateway(upstream_settings(fake_upstream.url)) as server:  # type: ignore[attr-defined]
        answer = httpx.post(server.url + "/v1/chat/completions", json=CHAT)
        text = scrape(server)
    assert float(answer.headers["x-tiergate-cost-usd"]) == pytest.approx(cost)
    assert sample(text, "tiergate_prompt_tokens_total", **MINI) == 1000
    assert sample(text, "tiergate_cached_prompt_tokens_total", **MINI) == 200
    assert sample(text, "tiergate_completion_tokens_total", **MINI) == 500
    assert sample(text, "tiergate_cost_usd_total", **MINI) == pytest.approx(cost)
    assert sample(text, "tiergate_counterfactual_cost_usd_total", tier="small") == pytest.approx(counterfactual)
    assert sample(text, "tiergate_saved_usd_total", tier="small") == pytest.approx(counterfactual - cost)


def test_large_tier_request_costs_its_counterfactual_and_saves_nothing(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(usage_reply(100, 10))
    with running_gateway(upstream_settings(fake_upstream.url), router=FixedRouter(0.9)) as server:  # type: ignore[attr-defined]
        answer = httpx.post(server.url + "/v1/chat/completions", json=CHAT)
        text = scrape(server)
    assert answer.headers["x-tiergate-tier"] == "large"
    assert float(answer.headers["x-tiergate-cost-usd"]) == pytest.approx((100 * 2.5 + 10 * 10.0) / 1e6)
    assert sample(text, "tiergate_saved_usd_total") == 0
    assert sample(text, "tiergate_routing_decisions_total", tier="large", reason="score_above_threshold") == 1


def test_streamed_usage_is_priced(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(content="one two three four"))
    body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]}
    with running_gateway(upstream_settings(fake_upstream.url)) as server:  # type: ignore[attr-defined]
        streamed = httpx.post(server.url + "/v1/chat/completions", json=body).text
        text = scrape(server)
    assert streamed.endswith("data: [DONE]\n\n")
    assert sample(text, "tiergate_prompt_tokens_total", **MINI) == 8  # the fake counts words + 3 per message
    assert sample(text, "tiergate_completion_tokens_total", **MINI) == 4
    assert sample(text, "tiergate_cost_usd_total", **MINI) == pytest.approx((8 * 0.15 + 4 * 0.60) / 1e6)
    assert sample(text, "tiergate_time_to_first_token_seconds_count", tier="small") == 1


def test_stream_abandoned_by_the_client_is_recorded_once(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=40, chunk_delay=0.05, content=" ".join(["word"] * 40)))
    recorder = Recorder()
    with running_gateway(upstream_settings(fake_upstream.url), sinks=[recorder]) as server:  # type: ignore[attr-defined]
        with httpx.stream("POST", server.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        wait_for(lambda: len(recorder.outcomes) == 1)
        time.sleep(0.2)  # a second record would arrive now
        text = scrape(server)
    assert [o.outcome for o in recorder.outcomes] == ["client_disconnected"]
    assert sample(text, "tiergate_requests_total", outcome="client_disconnected", stream="true") == 1
    assert sample(text, "tiergate_requests_total") == 1
    assert sample(text, "tiergate_in_flight_requests") == 0


@pytest.mark.parametrize(("reply", "overrides", "kind", "outcome"), [
    (Reply(status=500), {}, "http_5xx", "upstream_error"),
    (Reply(delay=1.0), {"timeout": {"connect": 1, "read": 0.2, "write": 1, "pool": 1}}, "timeout", "timeout"),
])
def test_failed_upstream_call_is_counted_with_its_kind(fake_upstream: FakeUpstream, reply: Reply,
                                                       overrides: dict[str, Any], kind: str, outcome: str) -> None:
    fake_upstream.push(*[reply] * 10)  # enough for any retry or fallback to fail too
    settings = upstream_settings(fake_upstream.url, tier_overrides={"small": overrides, "large": overrides})  # type: ignore[attr-defined]
    with running_gateway(settings) as server:
        assert httpx.post(server.url + "/v1/chat/completions", json=CHAT).status_code >= 500
        text = scrape(server)
    assert sample(text, "tiergate_upstream_errors_total", kind=kind) == 1
    assert sample(text, "tiergate_requests_total", outcome=outcome) == 1
    assert sample(text, "tiergate_in_flight_requests") == 0


def test_unreachable_upstream_is_a_connect_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = upstream_settings(f"http://127.0.0.1:{port}")
    with running_gateway(settings) as server:
        assert httpx.post(server.url + "/v1/chat/completions", json=CHAT).status_code == 502
        text = scrape(server)
    assert sample(text, "tiergate_upstream_errors_total", kind="connect") == 1


def test_request_log_has_one_line_per_request_and_no_prompt_by_default(fake_upstream: FakeUpstream,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "log" / "requests.jsonl"
    settings = upstream_settings(fake_upstream.url, request_log={"path": str(path)})  # type: ignore[attr-defined]
    with running_gateway(settings) as server:
        httpx.post(server.url + "/v1/chat/completions", json=CHAT)
        httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", "messages": MESSAGES})
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(line["outcome"], line["status"]) for line in lines] == [("success", 200), ("client_error", 404)]
    assert lines[0]["tier"] == "small" and lines[0]["reason"] == "score_below_threshold"
    assert lines[0]["cost_usd"] > 0 and lines[0]["score"] == pytest.approx(0.1)
    assert "prompt" not in lines[0] and "please explain" not in path.read_text()


def test_request_log_keeps_the_routing_text_only_when_enabled(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 request_log={"path": str(path), "include_prompts": True})
    with running_gateway(settings) as server:
        httpx.post(server.url + "/v1/chat/completions", json=CHAT)
    assert orjson.loads(path.read_bytes())["prompt"] == "please explain this"
