"""JSON (non-streaming) chat answers through the real gateway and a fake upstream on loopback TCP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.shared_gateway import SharedPair, shared_pair

CHAT = "/v1/chat/completions"
AUTO = "tiergate-auto"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"], "type": "string"}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    }
]
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"value": {"type": "number", "minimum": 0.5}, "tags": {"type": "array", "items": {}}},
            "required": ["value", "tags"],
            "additionalProperties": False,
        },
    },
}
PIXEL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    with shared_pair(FixedRouter(0.1)) as shared:
        yield shared


def test_json_answer_comes_from_the_routed_tier_with_usage(client: httpx.Client) -> None:
    response = client.post(CHAT, json={"model": AUTO, "messages": user("hello")})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert answer["model"] == SMALL_MODEL  # the model that actually answered, not the alias
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


@pytest.mark.parametrize(("model", "tier"), [(SMALL_MODEL, "small"), (LARGE_MODEL, "large")])
def test_explicit_backend_model_passes_through_without_routing(
    gateway: ServerThread, client: httpx.Client, fake_upstream: FakeUpstream, model: str, tier: str
) -> None:
    response = client.post(CHAT, json={"model": model, "messages": user("hello")})
    assert response.status_code == 200
    assert response.json()["model"] == model
    assert response.headers["x-tiergate-tier"] == tier
    assert response.headers["x-tiergate-reason"] == "explicit_model"
    assert fake_upstream.received[-1].body["model"] == model
    assert gateway.app.state.gateway.router.seen == []  # type: ignore[attr-defined]


def test_unknown_model_is_404_model_not_found_and_never_reaches_upstream(
    client: httpx.Client, fake_upstream: FakeUpstream
) -> None:
    response = client.post(CHAT, json={"model": "gpt-9-ultra", "messages": user("hello")})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "gpt-9-ultra" in error["message"]
    assert fake_upstream.received == []


def test_body_is_forwarded_as_sent_with_only_model_replaced(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    body = {
        "messages": [{"role": "system", "content": "be terse"}, *user("weather in Paris?")],
        "model": AUTO,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": RESPONSE_FORMAT,
        "n": 2,
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 3,
        "temperature": 0.25,
        "user": "u-1",
        "some_future_parameter": {"nested": [1, 2.5, None, "x"]},
    }
    assert client.post(CHAT, json=body).status_code == 200
    sent = fake_upstream.received[-1].body
    # Same keys in the same order, every value identical, only the model swapped for the tier's model.
    assert list(sent) == list(body)
    assert sent == {**body, "model": SMALL_MODEL}
    assert "stream_options" not in sent and "stream" not in sent


def test_tools_and_json_schema_reach_upstream_byte_for_byte(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    body = {"model": AUTO, "messages": user("call the tool"), "tools": TOOLS, "response_format": RESPONSE_FORMAT}
    assert client.post(CHAT, content=orjson.dumps(body), headers={"content-type": "application/json"}).status_code == 200
    sent = fake_upstream.received[-1].body
    assert orjson.dumps(sent["tools"]) == orjson.dumps(TOOLS)
    assert orjson.dumps(sent["response_format"]) == orjson.dumps(RESPONSE_FORMAT)


def test_image_parts_are_accepted_and_forwarded(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    content = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
    ]
    response = client.post(CHAT, json={"model": AUTO, "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200
    assert fake_upstream.received[-1].body["messages"][0]["content"] == content


def test_upstream_gets_no_client_credentials_or_extra_headers(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    headers = {"authorization": "Bearer client-secret", "x-custom": "1"}
    assert client.post(CHAT, json={"model": AUTO, "messages": user("hi")}, headers=headers).status_code == 200
    upstream_headers = fake_upstream.received[-1].headers
    assert "authorization" not in upstream_headers
    assert "x-custom" not in upstream_headers
    assert upstream_headers["content-type"] == "application/json"


def test_malformed_json_is_400_invalid_json(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    response = client.post(CHAT, content=b'{"model": "tiergate-auto", "messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]  # errors can be traced too
    assert fake_upstream.received == []


SCHEMA_VIOLATIONS: list[tuple[dict[str, Any], str]] = [
    ({"model": AUTO}, "messages"),
    ({"model": AUTO, "messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": AUTO, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": AUTO, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": AUTO, "messages": user("hi"), "temperature": 3}, "temperature"),
    ({"model": AUTO, "messages": user("hi"), "n": 0}, "n"),
    ({"model": AUTO, "messages": user("hi"), "stream": "yes"}, "stream"),
]


def test_schema_violations_are_400_naming_the_param(
    client: httpx.Client, fake_upstream: FakeUpstream, subtests: pytest.Subtests
) -> None:
    # One gateway for all cases (subtests): starting one per case would dominate the suite's run time.
    for body, param in SCHEMA_VIOLATIONS:
        with subtests.test(param=param):
            response = client.post(CHAT, json=body)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] == param
    assert fake_upstream.received == []


def test_body_over_the_limit_is_413(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, server={"max_body_bytes": 4096})  # type: ignore[attr-defined]
    big = {"model": AUTO, "messages": user("x" * 10_000)}
    with running_gateway(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        declared = client.post(CHAT, json=big)
        chunked = client.post(CHAT, content=iter([orjson.dumps(big)]), headers={"content-type": "application/json"})
        small = client.post(CHAT, json={"model": AUTO, "messages": user("hi")})
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200
    assert len(fake_upstream.received) == 1


def test_unknown_path_and_method_answer_in_openai_error_shape(client: httpx.Client) -> None:
    missing = client.get("/v1/nothing-here")
    wrong_method = client.get(CHAT)
    assert missing.status_code == 404
    assert wrong_method.status_code == 405
    for response in (missing, wrong_method):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_models_lists_aliases_and_backend_models(client: httpx.Client) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [AUTO, SMALL_MODEL, LARGE_MODEL]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listing["data"])


def test_health_and_readiness_probes(client: httpx.Client) -> None:
    health = client.get("/healthz")
    ready = client.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    checks = ready.json()["checks"]
    assert all(checks.values())
    assert {"router", "backend:small", "backend:large"} <= set(checks)


def test_readiness_is_503_while_the_router_is_not_ready(fake_upstream: FakeUpstream) -> None:
    class NeverReady(FixedRouter):
        def ready(self) -> bool:
            return False

    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    with running_gateway(settings, router=NeverReady()) as server, httpx.Client(base_url=server.url) as client:
        response = client.get("/readyz")
        health = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["router"] is False
    assert health.status_code == 200
