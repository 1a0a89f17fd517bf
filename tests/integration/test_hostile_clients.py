"""Hostile or careless clients: cheap checks before the schema, JSON only, Host checks, secrets, crashes."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest

from gateway.redaction import Redactor
from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.fault_doubles import Outcomes
from tests.support.gateway import running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}
ERROR_KEYS = {"message", "type", "param", "code"}
SECRET = "sk-proj-Abcdefgh12345678Ijklmnop90"
ENV = "TIERGATE_TEST_HOSTILE_UPSTREAM_KEY"


def wait_for(outcomes: Outcomes, count: int) -> None:
    deadline = time.monotonic() + 3
    while len(outcomes.items) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_message_count_is_checked_before_the_schema(fake_upstream: FakeUpstream) -> None:
    messages: list[Any] = [{"role": "user", "content": "hi"}] * 5000
    messages[4999] = {"role": "robot", "content": 7}  # a schema error the full validation would find first
    with running_gateway(upstream_settings(fake_upstream.url)) as gateway:  # type: ignore[attr-defined]
        answer = httpx.post(gateway.url + CHAT, json={"model": "tiergate-auto", "messages": messages}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "too_many_messages"


def test_rate_limit_is_checked_before_the_schema(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, limits={"requests_per_minute": 1})  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        first = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
        invalid = httpx.post(gateway.url + CHAT, json={**BODY, "temperature": 9}, timeout=10)
    assert first.status_code == 200
    assert invalid.status_code == 429  # over its limit: no schema work is spent on it


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_chat_requires_application_json(fake_upstream: FakeUpstream, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with running_gateway(upstream_settings(fake_upstream.url)) as gateway:  # type: ignore[attr-defined]
        answer = httpx.post(gateway.url + CHAT, content=b'{"model": "tiergate-auto", "messages": []}',
                            headers=headers, timeout=10)
        fine = httpx.post(gateway.url + CHAT, json=BODY, headers={"content-type": "application/json; charset=utf-8"},
                          timeout=10)
    assert answer.status_code == 415 and set(answer.json()["error"]) == ERROR_KEYS
    assert fine.status_code == 200
    assert len(fake_upstream.received) == 1


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", {"model": "tiergate-auto", "input": "hello"}),
    ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "hello"}),
])
def test_every_json_endpoint_requires_application_json(fake_upstream: FakeUpstream, path: str,
                                                       body: dict[str, Any]) -> None:
    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        answer = httpx.post(gateway.url + path, content=httpx.Request("POST", "/", json=body).content,
                            headers={"content-type": "text/plain"}, timeout=10)
    assert answer.status_code == 415 and set(answer.json()["error"]) == ERROR_KEYS
    assert fake_upstream.received == []


def test_foreign_host_is_refused_on_a_keyless_loopback_gateway(fake_upstream: FakeUpstream) -> None:
    with running_gateway(upstream_settings(fake_upstream.url)) as gateway:  # type: ignore[attr-defined]
        rebound = httpx.post(gateway.url + CHAT, json=BODY, headers={"host": "evil.example:8000"}, timeout=10)
        local = httpx.post(gateway.url + CHAT, json=BODY, headers={"host": f"localhost:{gateway.port}"}, timeout=10)
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host"
    assert local.status_code == 200
    assert len(fake_upstream.received) == 1


def test_allowed_hosts_can_be_configured(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, server={"allowed_hosts": ["api.example"]})  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        named = httpx.get(gateway.url + "/healthz", headers={"host": "api.example"}, timeout=10)
        other = httpx.get(gateway.url + "/healthz", timeout=10)
    assert named.status_code == 200 and other.status_code == 400


def test_any_fragment_of_the_upstream_key_is_redacted_in_every_error_field(
        fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    leaky = {"error": {"message": f"bad request for key {SECRET[:14]}****{SECRET[-4:]}",
                       "type": f"type-{SECRET[3:13]}", "param": SECRET[10:20], "code": f"code_{SECRET[-10:]}"}}
    fake_upstream.push(Reply(status=400, body=leaky))
    settings = upstream_settings(fake_upstream.url, tier_overrides={  # type: ignore[attr-defined]
        "small": {"api_key_env": ENV}, "large": {"api_key_env": ENV}})
    with running_gateway(settings) as gateway:
        answer = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == ERROR_KEYS
    for value in error.values():
        text = str(value)
        assert not any(SECRET[i : i + 8] in text for i in range(len(SECRET) - 7)), text
    assert "[redacted]" in error["message"]


def test_upstream_rejecting_the_gateways_own_key_with_a_400_is_a_502(
        fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    own = {"error": {"message": "Incorrect API key provided: sk-proj-****90.", "type": "invalid_request_error",
                     "param": None, "code": "invalid_api_key"}}
    fake_upstream.push(Reply(status=400, body=own))
    settings = upstream_settings(fake_upstream.url, resilience={"fallback": {"failures": []}},  # type: ignore[attr-defined]
                                 tier_overrides={"small": {"api_key_env": ENV}})
    with running_gateway(settings) as gateway:
        answer = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_error"
    assert "sk-proj" not in answer.text
    assert len(fake_upstream.received) == 1  # not retried


def test_a_crash_inside_the_gateway_is_a_500_recorded_as_internal_with_one_log_line(
        fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    outcomes = Outcomes()
    with running_gateway(upstream_settings(fake_upstream.url), sinks=[outcomes]) as gateway:  # type: ignore[attr-defined]
        async def crash(*args: Any) -> Any:
            raise KeyError("a bug")

        gateway.app.state.gateway.decider.decide = crash  # type: ignore[attr-defined]
        caplog.set_level(logging.INFO)
        answer = httpx.post(gateway.url + CHAT, json=BODY, headers={"x-request-id": "req-crash"}, timeout=10)
        wait_for(outcomes, 1)
    assert answer.status_code == 500 and set(answer.json()["error"]) == ERROR_KEYS
    assert [(o.status, o.outcome) for o in outcomes.items] == [(500, "internal")]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "req-crash" in errors[0].getMessage() and errors[0].exc_info is None


def test_redactor_replaces_runs_of_secret_windows() -> None:
    redact = Redactor([SECRET])
    assert redact(f"key {SECRET} end") == "key [redacted] end"
    assert redact(f"{SECRET[:12]}...{SECRET[-9:]}") == "[redacted]...[redacted]"
    assert redact("nothing to see") == "nothing to see"
    assert redact(SECRET[:7]) == SECRET[:7]  # shorter than 8 characters: not identifying
