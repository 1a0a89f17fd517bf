"""What the gateway sends validates against OpenAI's own OpenAPI schemas: answers, each chunk, models, errors."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.tools.fake_upstream import FakeUpstream, Reply, completion
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings
from tests.support.openapi import OpenAPISchemas, schemas_or_skip, translate_nullable
from tests.support.shared_gateway import SharedPair, shared_pair

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="session")
def openapi(pytestconfig: pytest.Config) -> OpenAPISchemas:
    return schemas_or_skip(pytestconfig)


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    with shared_pair(FixedRouter(0.1), server={"max_body_bytes": 4096}) as shared:
        yield shared


def stream_payloads(text: str) -> list[Any]:
    data = [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]
    assert data and data[-1] == "[DONE]"
    return [orjson.loads(item) for item in data[:-1]]


def test_nullable_becomes_a_type_union_and_properties_named_nullable_survive() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "b": {"type": "string", "enum": ["x"], "nullable": True},
            "c": {"$ref": "#/x", "nullable": True},
            "d": {"type": "integer", "nullable": False},
            "nullable": {"type": "boolean"},
        },
    }
    out = translate_nullable(schema)
    props = out["properties"]
    assert props["a"] == {"type": ["string", "null"]}
    assert props["b"] == {"type": ["string", "null"], "enum": ["x", None]}
    assert props["c"] == {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}
    assert props["d"] == {"type": "integer"}
    assert props["nullable"] == {"type": "boolean"}


def test_schema_helper_rejects_what_openai_would_not_send(openapi: OpenAPISchemas) -> None:
    assert openapi.errors("ErrorResponse", {"error": {"message": "m", "type": "t"}})  # param, code missing
    assert openapi.errors("CreateChatCompletionResponse", {"id": "x", "object": "chat.completion"})
    assert not openapi.errors("CreateChatCompletionResponse", completion({"model": "m"}, "hi"))


def test_json_answer_is_a_valid_chat_completion(client: httpx.Client, openapi: OpenAPISchemas) -> None:
    response = client.post(CHAT, json={"model": "tiergate-auto", "messages": MESSAGES})
    assert response.status_code == 200
    openapi.validate("CreateChatCompletionResponse", response.json())


def test_tool_call_answer_passes_through_unchanged_and_valid(
    client: httpx.Client, fake_upstream: FakeUpstream, openapi: OpenAPISchemas
) -> None:
    answer = completion({"model": "gpt-4o-mini"}, "")
    answer["choices"][0]["message"] = {
        "role": "assistant", "content": None, "refusal": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}],
    }
    answer["choices"][0]["finish_reason"] = "tool_calls"
    answer["system_fingerprint"] = "fp_123"
    fake_upstream.push(Reply(body=answer))
    response = client.post(CHAT, json={"model": "tiergate-auto", "messages": MESSAGES})
    assert response.json() == answer
    openapi.validate("CreateChatCompletionResponse", response.json())


@pytest.mark.parametrize("include_usage", [False, True])
def test_every_stream_chunk_is_a_valid_chat_completion_chunk(
    client: httpx.Client, openapi: OpenAPISchemas, include_usage: bool
) -> None:
    body = {"model": "tiergate-auto", "messages": MESSAGES, "stream": True,
            "stream_options": {"include_usage": include_usage}}
    chunks = stream_payloads(client.post(CHAT, json=body).text)
    assert len(chunks) >= 3
    for chunk in chunks:
        openapi.validate("CreateChatCompletionStreamResponse", chunk)
    assert any("usage" in chunk for chunk in chunks) is include_usage


def test_model_list_is_a_valid_list_models_response(client: httpx.Client, openapi: OpenAPISchemas) -> None:
    response = client.get("/v1/models")
    openapi.validate("ListModelsResponse", response.json())


def test_gateway_errors_are_valid_error_responses(
    client: httpx.Client, openapi: OpenAPISchemas, subtests: pytest.Subtests
) -> None:
    json_type = {"content-type": "application/json"}
    cases: list[tuple[str, int, Any]] = [
        ("malformed json", 400, lambda: client.post(CHAT, content=b"{nope", headers=json_type)),
        ("schema violation", 400, lambda: client.post(CHAT, json={"model": "tiergate-auto", "messages": "hi"})),
        ("bad threshold", 400, lambda: client.post(CHAT, json={"model": "tiergate-auto@7", "messages": MESSAGES})),
        ("unknown model", 404, lambda: client.post(CHAT, json={"model": "nope", "messages": MESSAGES})),
        ("unknown path", 404, lambda: client.get("/v1/nope")),
        ("wrong method", 405, lambda: client.put("/v1/models")),
        ("huge body", 413, lambda: client.post(CHAT, json={"model": "x", "messages": [{"role": "user",
                                                                                       "content": "x" * 9000}]})),
    ]
    for name, status, send in cases:
        with subtests.test(case=name):
            response = send()
            assert response.status_code == status
            openapi.validate("ErrorResponse", response.json())


@pytest.mark.parametrize("reply", [Reply(status=400), Reply(status=429), Reply(status=500),
                                   Reply(status=503, body={"detail": "not openai shaped"})],
                         ids=["400", "429", "500", "503-foreign-body"])
def test_upstream_errors_reach_the_client_as_valid_error_responses(
    client: httpx.Client, fake_upstream: FakeUpstream, openapi: OpenAPISchemas, reply: Reply
) -> None:
    fake_upstream.push(reply)
    response = client.post(CHAT, json={"model": "tiergate-auto", "messages": MESSAGES})
    assert response.status_code >= 400
    openapi.validate("ErrorResponse", response.json())


def test_in_band_stream_error_is_a_valid_error_response(
    client: httpx.Client, fake_upstream: FakeUpstream, openapi: OpenAPISchemas
) -> None:
    fake_upstream.push(Reply(drop_after=2))
    payloads = stream_payloads(client.post(CHAT, json={"model": "tiergate-auto", "messages": MESSAGES,
                                                       "stream": True}).text)
    *chunks, error = payloads
    for chunk in chunks:
        openapi.validate("CreateChatCompletionStreamResponse", chunk)
    openapi.validate("ErrorResponse", error)


@pytest.mark.skipif(importlib.util.find_spec("gateway.admission.auth") is None, reason="gateway API keys are not implemented")
def test_authentication_errors_are_valid_error_responses(fake_upstream: FakeUpstream, openapi: OpenAPISchemas) -> None:
    from gateway.admission.auth import hash_key

    settings = upstream_settings(fake_upstream.url, auth={"keys": [{"name": "k", "hash": hash_key("tg-right")}]})  # type: ignore[attr-defined]
    with running_gateway(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        missing = client.post(CHAT, json={"model": "tiergate-auto", "messages": MESSAGES})
        wrong = client.post(CHAT, json={"model": "tiergate-auto", "messages": MESSAGES},
                            headers={"authorization": "Bearer tg-wrong"})
    for response in (missing, wrong):
        assert response.status_code == 401
        openapi.validate("ErrorResponse", response.json())
