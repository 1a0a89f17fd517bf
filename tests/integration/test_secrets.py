"""Secrets and privacy: the upstream key and the conversation never show in responses, headers or logs."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.fault_doubles import closed_port_url
from tests.support.gateway import running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
SENTINEL = "sk-SENTINEL-upstream-key-7f3a9c1e5b"
CLIENT_KEY = "tg-client-key-SENTINEL-42"
PROMPT = "PROMPT-SENTINEL please summarise my medical record"
COMPLETION = "COMPLETION-SENTINEL your diagnosis is"
ENV = "TIERGATE_TEST_UPSTREAM_KEY"


def test_upstream_key_and_conversation_never_leak(fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SENTINEL)
    caplog.set_level(logging.DEBUG)
    echoed = {"error": {"message": f"Incorrect API key provided: {SENTINEL}", "type": "invalid_request_error"}}
    bad_request = {"error": {"message": f"bad request (key {SENTINEL})", "type": "invalid_request_error"}}
    fake_upstream.push(
        Reply(content=COMPLETION),  # JSON answer
        Reply(content=COMPLETION),  # streamed answer
        Reply(status=500), Reply(content=COMPLETION),  # retried
        Reply(status=401, body=echoed),  # the upstream rejects our key and echoes it
        Reply(status=400, body=bad_request),  # a pass-through 4xx that quotes the key
        Reply(drop_after=1, content=COMPLETION),  # broken stream
    )
    key = {"api_key_env": ENV}
    settings = upstream_settings(
        fake_upstream.url,  # type: ignore[attr-defined]
        auth={"keys": [{"name": "client", "hash": hash_key(CLIENT_KEY)}]},
        resilience={"retry": {"base_delay_s": 0.01}, "fallback": {"directions": []}},
        tier_overrides={"small": key, "large": {**key, "base_url": closed_port_url() + "/v1"}},
    )
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "tiergate-auto", "messages": [{"role": "user", "content": PROMPT}]}
    responses: list[httpx.Response] = []
    router = FixedRouter(0.1, by_keyword={"LARGE": 0.9})
    with (running_gateway(settings, router=router) as gateway,
          httpx.Client(base_url=gateway.url, timeout=10) as client):
        responses.append(client.post(CHAT, json=body, headers=headers))
        responses.append(client.post(CHAT, json={**body, "stream": True}, headers=headers))
        responses.append(client.post(CHAT, json=body, headers=headers))
        responses.append(client.post(CHAT, json=body, headers=headers))
        responses.append(client.post(CHAT, json=body, headers=headers))
        responses.append(client.post(CHAT, json={**body, "stream": True}, headers=headers))
        large = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "LARGE " + PROMPT}]}
        responses.append(client.post(CHAT, json=large, headers=headers))  # connection refused
        responses.append(client.post(CHAT, json=body, headers={"authorization": f"Bearer {SENTINEL}"}))
        responses.append(client.post(CHAT + f"?api_key={SENTINEL}", json=body))
        responses.append(client.get("/v1/models", headers=headers))
        responses.append(client.get("/metrics"))
        responses.append(client.get("/readyz"))

    statuses = [r.status_code for r in responses[:9]]
    assert statuses == [200, 200, 200, 502, 400, 200, 502, 401, 401]
    assert COMPLETION.split()[0] in responses[0].text  # the client does get its answer
    # The key was really used upstream, so the scan below is meaningful.
    assert fake_upstream.received[0].headers["authorization"] == f"Bearer {SENTINEL}"
    assert all(CLIENT_KEY not in str(r.headers) for r in fake_upstream.received)
    for response in responses:
        assert SENTINEL not in response.text
        assert SENTINEL not in str(response.headers)
    assert caplog.records, "expected some log records to scan"
    handler_text = caplog.text
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in (SENTINEL, CLIENT_KEY, "PROMPT-SENTINEL", "COMPLETION-SENTINEL"):
            assert secret not in text, f"{secret} leaked in log record {record.name}: {text[:200]}"
    for secret in (SENTINEL, CLIENT_KEY, "PROMPT-SENTINEL", "COMPLETION-SENTINEL"):
        assert secret not in handler_text
    request_records = [r for r in caplog.records if r.name.startswith("tiergate.")]
    assert request_records and all(getattr(r, "request_id", "-") != "-" for r in request_records)


def test_log_filter_redacts_secrets_from_any_record(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.telemetry import log_context

    caplog.set_level(logging.INFO)
    log_context.install([SENTINEL])
    token = log_context.REQUEST_ID.set("req-123")
    try:
        logging.getLogger("httpx").info("sent %s with header Bearer %s", "POST", SENTINEL)
    finally:
        log_context.REQUEST_ID.reset(token)
    record = caplog.records[-1]
    assert SENTINEL not in record.getMessage() and "[redacted]" in record.getMessage()
    assert record.request_id == "req-123"  # type: ignore[attr-defined]


def test_a_key_with_a_trailing_newline_is_sent_without_it(fake_upstream: FakeUpstream,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SENTINEL + "\n")  # a key file's trailing newline, carried into the environment
    settings = upstream_settings(fake_upstream.url, tier_overrides={"small": {"api_key_env": ENV}})  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as gateway:
        answer = httpx.post(gateway.url + CHAT, json={"model": "tiergate-auto",
                                                      "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert answer.status_code == 200
    assert fake_upstream.received[0].headers["authorization"] == f"Bearer {SENTINEL}"
