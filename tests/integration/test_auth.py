"""Gateway API keys on loopback: who may call, what they may use, and what never reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.fault_doubles import Outcomes
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
KEY = "tg-integration-key-a1b2c3d4"
SMALL_ONLY_KEY = "tg-integration-key-small-only"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}
AUTH = {"keys": [{"name": "team-a", "hash": hash_key(KEY)},
                 {"name": "small-only", "hash": hash_key(SMALL_ONLY_KEY), "tiers": ["small"],
                  "models": ["tiergate-auto", SMALL_MODEL]}]}


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
def gateway(fake_upstream: FakeUpstream, outcomes: Outcomes) -> Iterator[ServerThread]:
    settings = upstream_settings(fake_upstream.url, auth=AUTH)  # type: ignore[attr-defined]
    with running_gateway(settings, sinks=[outcomes]) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response, key: str | None = None) -> None:
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    if key:
        assert key not in response.text


def test_missing_key_is_refused_before_the_upstream(gateway: ServerThread, fake_upstream: FakeUpstream,
                                                    outcomes: Outcomes) -> None:
    assert_refused(httpx.post(gateway.url + CHAT, json=BODY))
    assert fake_upstream.received == []
    assert [o.status for o in outcomes.items] == [401]  # refused requests are still accounted


def test_wrong_key_is_refused_without_echoing_it(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    wrong = "tg-integration-key-WRONG"
    assert_refused(httpx.post(gateway.url + CHAT, json=BODY, headers=bearer(wrong)), wrong)
    assert_refused(httpx.post(gateway.url + CHAT, json=BODY, headers={"authorization": KEY}))
    assert fake_upstream.received == []


def test_key_in_query_string_is_refused(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    for query in (f"?api_key={KEY}", f"?key={KEY}"):
        assert_refused(httpx.post(gateway.url + CHAT + query, json=BODY))
        assert_refused(httpx.post(gateway.url + CHAT + query, json=BODY, headers=bearer(KEY)))
    assert fake_upstream.received == []


def test_model_list_needs_a_key_too(gateway: ServerThread) -> None:
    assert_refused(httpx.get(gateway.url + "/v1/models"))
    assert httpx.get(gateway.url + "/v1/models", headers=bearer(KEY)).status_code == 200
    assert httpx.get(gateway.url + "/healthz").status_code == 200  # probes stay open


def test_valid_key_is_answered_and_never_forwarded(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    answer = httpx.post(gateway.url + CHAT, json=BODY, headers=bearer(KEY))
    assert answer.status_code == 200
    assert KEY not in str(fake_upstream.received[0].headers)
    assert "authorization" not in fake_upstream.received[0].headers  # no upstream key configured here


def test_official_sdk_gets_authentication_error(gateway: ServerThread) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="tg-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tiergate-auto", messages=[{"role": "user", "content": "hi"}])
    good = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    assert good.chat.completions.create(model="tiergate-auto", messages=[{"role": "user", "content": "hi"}]).choices


def test_key_limited_to_small_tier_and_models(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    headers = bearer(SMALL_ONLY_KEY)
    denied = httpx.post(gateway.url + CHAT, json={**BODY, "model": LARGE_MODEL}, headers=headers)
    assert denied.status_code == 403 and denied.json()["error"]["param"] == "model"
    routed = httpx.post(gateway.url + CHAT, json=BODY, headers=headers)
    assert routed.status_code == 200 and routed.headers["x-tiergate-tier"] == "small"
    assert [r.body["model"] for r in fake_upstream.received] == [SMALL_MODEL]


def test_keys_file_is_read(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"- name: file-key\n  hash: {hash_key('tg-file-key-123456')}\n")
    settings = upstream_settings(fake_upstream.url, auth={"keys_file": str(path)})  # type: ignore[attr-defined]
    with running_gateway(settings) as server:
        assert httpx.post(server.url + CHAT, json=BODY, headers=bearer("tg-file-key-123456")).status_code == 200
        assert_refused(httpx.post(server.url + CHAT, json=BODY))


def test_client_authorization_is_forwarded_only_when_configured(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 tier_overrides={"small": {"forward_client_authorization": True}})
    with running_gateway(settings) as server:
        httpx.post(server.url + CHAT, json=BODY, headers=bearer("sk-client-own-key"))
    assert fake_upstream.received[0].headers["authorization"] == "Bearer sk-client-own-key"
