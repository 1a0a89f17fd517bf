"""Wire validation: accept what OpenAI accepts without changing it, reject the rest naming the param."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequestError, UpstreamStatusError
from gateway.protocol import parse_body, validate_chat


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hi"}], **fields}


def rejected_param(body: dict[str, Any]) -> str | None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_chat(body)
    assert caught.value.status == 400
    return caught.value.param


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe"])
def test_unparseable_body_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_body(raw)
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"text"', b"null"])
def test_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse_body(raw)


def test_validation_keeps_the_body_exactly_as_sent() -> None:
    body = chat(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        logprobs=True, top_logprobs=2, n=3, seed=1,
        stream_options={"include_usage": True, "future": 1},
        brand_new_param={"x": [1, None]},
    )
    before = copy.deepcopy(body)
    validated = validate_chat(body)
    assert body == before
    assert validated.model_extra is not None and validated.model_extra["brand_new_param"] == {"x": [1, None]}


def test_openai_shaped_conversations_are_accepted() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "name": "alice", "content": "thanks"},
    ]
    validate_chat({"model": "m", "messages": messages})


def test_integer_temperature_is_accepted() -> None:
    # JSON has one number type: clients routinely send temperature: 1 for 1.0.
    assert validate_chat(chat(temperature=1, top_p=1)).temperature == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": "ok"}, {"role": "bot", "content": "x"}]},
         "messages[1].role"),
        ({"model": "m", "messages": [{"role": "user", "content": {"text": "x"}}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content"),
        (chat(temperature=2.5), "temperature"),
        (chat(top_p=-0.1), "top_p"),
        (chat(n=0), "n"),
        (chat(n=1.5), "n"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(stream="true"), "stream"),
        (chat(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (chat(stop=5), "stop"),
        (chat(tools={"type": "function"}), "tools"),
        (chat(tools=[5]), "tools[0]"),
        ({"model": "m", "messages": [5]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name"),
        (chat(temperature=True), "temperature"),
        (chat(response_format="json"), "response_format"),
    ],
)
def test_schema_violation_names_the_offending_param(body: dict[str, Any], param: str) -> None:
    assert rejected_param(body) == param


def test_error_renders_as_openai_error_object() -> None:
    error = InvalidRequestError("bad thing", param="messages", code="invalid_value")
    assert orjson.loads(error.json()) == {
        "error": {"message": "bad thing", "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}
    }


@pytest.mark.parametrize(("upstream", "client"), [(400, 400), (404, 404), (422, 422), (429, 429), (500, 502),
                                                  (503, 502), (302, 502)])
def test_upstream_4xx_passes_through_and_other_failures_are_502(upstream: int, client: int) -> None:
    error = UpstreamStatusError(upstream, {"error": {"message": "m", "type": "t", "param": "p", "code": "c"}})
    assert error.status == client
    assert error.upstream_status == upstream
    assert error.body() == {"error": {"message": "m", "type": "t", "param": "p", "code": "c"}}
