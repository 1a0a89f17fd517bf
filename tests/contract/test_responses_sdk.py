"""The Responses API through the official SDK: translated to chat for one tier, forwarded to a Responses-speaking
upstream for the other, both checked against OpenAI's own schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.openapi import OpenAPISchemas, schemas_or_skip
from tests.support.shared_gateway import SharedPair, shared_pair

AUTO = "tiergate-auto"
ANSWER = "Hello from the fake upstream."
HARD = "prove this theorem"  # scores 0.9: the large tier, which speaks the Responses API
WEATHER_TOOL: dict[str, Any] = {
    "type": "function", "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}
PARIS = Reply(tool_calls=[{"id": "call_paris", "name": "get_weather", "arguments": '{"city": "Paris"}'}])


@pytest.fixture(scope="session")
def openapi(pytestconfig: pytest.Config) -> OpenAPISchemas:
    return schemas_or_skip(pytestconfig)


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    overrides = {"large": {"responses_api": True}}
    with shared_pair(FixedRouter(0.1, by_keyword={"prove": 0.9}), tier_overrides=overrides) as shared:
        yield shared


def client_for(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        data = orjson.loads(lines["data"])
        assert lines["event"] == data["type"]  # the SSE event name is the event's type
        events.append(data)
    return events


def test_translated_response_is_valid_and_the_upstream_got_chat(gateway: Any, fake_upstream: FakeUpstream,
                                                                openapi: OpenAPISchemas) -> None:
    with client_for(gateway) as client:
        raw = client.responses.with_raw_response.create(model=AUTO, input="Say hello", instructions="Be brief.",
                                                        max_output_tokens=50)
        response = raw.parse()
    assert response.output_text == ANSWER
    assert raw.headers["x-tiergate-tier"] == "small"
    assert response.usage is not None and response.usage.output_tokens > 0
    sent = fake_upstream.received[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert sent.body["max_tokens"] == 50
    openapi.validate("Response", orjson.loads(raw.http_response.content))


def test_forwarded_response_goes_as_sent_with_only_the_model_replaced(gateway: Any, fake_upstream: FakeUpstream,
                                                                      openapi: OpenAPISchemas) -> None:
    body = {"model": AUTO, "input": [{"role": "user", "content": [{"type": "input_text", "text": HARD}]}],
            "instructions": "Think.", "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"]}
    response = httpx.post(gateway.url + "/v1/responses", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["x-tiergate-tier"] == "large"
    sent = fake_upstream.received[-1]
    assert sent.path == "/v1/responses"
    assert sent.body == {**body, "model": LARGE_MODEL}
    openapi.validate("Response", response.json())


@pytest.mark.parametrize("text, tier, path", [("Say hello", "small", "/v1/chat/completions"),
                                              (HARD, "large", "/v1/responses")])
def test_stream_events_are_typed_valid_and_spell_the_answer(gateway: Any, fake_upstream: FakeUpstream,
                                                            openapi: OpenAPISchemas, text: str, tier: str,
                                                            path: str) -> None:
    with client_for(gateway) as client:
        stream = client.responses.create(model=AUTO, input=text, stream=True)
        with stream:
            events = list(stream)
    assert fake_upstream.received[-1].path == path
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text_out = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text_out.split() == ANSWER.split()
    assert events[-1].response.usage is not None and events[-1].response.usage.output_tokens > 0
    raw = httpx.post(gateway.url + "/v1/responses", json={"model": AUTO, "input": text, "stream": True}, timeout=10)
    assert raw.headers["x-tiergate-tier"] == tier
    assert raw.headers["content-type"].startswith("text/event-stream")
    for event in sse_events(raw.text):
        openapi.validate("ResponseStreamEvent", event)


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("text", ["What is the weather?", HARD])
def test_parse_returns_the_structured_object(gateway: Any, fake_upstream: FakeUpstream, text: str) -> None:
    fake_upstream.push(Reply(content='{"city": "Paris", "celsius": 21}'))
    with client_for(gateway) as client:
        parsed = client.responses.parse(model=AUTO, input=text, text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", celsius=21)
    sent = fake_upstream.received[-1].body
    if fake_upstream.received[-1].path == "/v1/chat/completions":
        schema = sent["response_format"]
        assert schema["type"] == "json_schema" and schema["json_schema"]["name"] == "Weather"
        assert schema["json_schema"]["schema"]["required"] == ["city", "celsius"]
    else:
        assert sent["text"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_translates_both_ways_and_its_result_returns_to_the_same_tier(
        gateway: Any, fake_upstream: FakeUpstream, openapi: OpenAPISchemas, stream: bool) -> None:
    fake_upstream.push(PARIS)
    body = {"model": AUTO, "input": "Weather in Paris?", "tools": [WEATHER_TOOL], "stream": stream}
    first = httpx.post(gateway.url + "/v1/responses", json=body, timeout=10)
    assert first.status_code == 200
    sent = fake_upstream.received[-1].body
    assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}]
    if stream:
        events = sse_events(first.text)
        for event in events:
            openapi.validate("ResponseStreamEvent", event)
        response = events[-1]["response"]
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        assert deltas == '{"city": "Paris"}'
    else:
        response = first.json()
        openapi.validate("Response", response)
    call = response["output"][0]
    assert (call["type"], call["call_id"], call["name"], call["arguments"]) == (
        "function_call", "call_paris", "get_weather", '{"city": "Paris"}')
    # The result of the call: the scorer would send "prove" to large, but the loop stays on small.
    follow = {"model": AUTO, "previous_response_id": response["id"], "tools": [WEATHER_TOOL],
              "input": [{"type": "function_call_output", "call_id": "call_paris", "output": "prove: 21 C"}]}
    second = httpx.post(gateway.url + "/v1/responses", json=follow, timeout=10)
    assert second.status_code == 200, second.text
    assert second.headers["x-tiergate-tier"] == "small"
    assert second.headers["x-tiergate-reason"] == "sticky"
    messages = fake_upstream.received[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == "call_paris"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_paris", "content": "prove: 21 C"}


def test_sdk_tool_call_on_the_forwarded_tier(gateway: Any, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(PARIS)
    with client_for(gateway) as client:
        response = client.responses.create(model=AUTO, input=HARD, tools=[WEATHER_TOOL])  # type: ignore[list-item]
        call = response.output[0]
        assert call.type == "function_call" and call.call_id == "call_paris"
        raw = client.responses.with_raw_response.create(
            model=AUTO, input=[{"type": "function_call_output", "call_id": "call_paris", "output": "21 C"}],
            previous_response_id=response.id)
    assert raw.headers["x-tiergate-tier"] == "large" and raw.headers["x-tiergate-reason"] == "sticky"
    sent = fake_upstream.received[-1]
    assert sent.path == "/v1/responses" and sent.body["previous_response_id"] == "resp_fake"


def test_previous_response_id_continues_a_translated_conversation_and_get_returns_it(
        gateway: Any, fake_upstream: FakeUpstream) -> None:
    with client_for(gateway) as client:
        first = client.responses.create(model=AUTO, input="My name is Ada.", instructions="Be brief.")
        client.responses.create(model=AUTO, input="What is my name?", previous_response_id=first.id)
        assert client.responses.retrieve(first.id).output_text == ANSWER
    messages = fake_upstream.received[-1].body["messages"]
    assert messages == [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": ANSWER},
                        {"role": "user", "content": "What is my name?"}]  # instructions do not carry over


def test_unknown_previous_response_id_is_a_clear_400(gateway: Any) -> None:
    with client_for(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=AUTO, input="hi", previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
    assert "resp_nope" in caught.value.message


def test_unstored_response_cannot_be_retrieved_or_continued(gateway: Any) -> None:
    with client_for(gateway) as client:
        response = client.responses.create(model=AUTO, input="hi", store=False)
        assert response.store is False
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)


def test_store_is_refused_not_pretended_when_the_gateway_keeps_nothing(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, responses={"store_ttl_s": 0})  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway, client_for(gateway) as client:
        assert client.responses.create(model=AUTO, input="hi").store is False
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=AUTO, input="hi", store=True)
        assert caught.value.param == "store"
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=AUTO, input="hi", previous_response_id="resp_x")
        assert "keeps none" in caught.value.message


def test_upstream_error_is_openai_shaped_with_its_status(gateway: Any, fake_upstream: FakeUpstream,
                                                         openapi: OpenAPISchemas) -> None:
    fake_upstream.push(Reply(status=400, body={"error": {"message": "bad schema", "type": "invalid_request_error",
                                                         "param": "text", "code": None}}))
    response = httpx.post(gateway.url + "/v1/responses", json={"model": AUTO, "input": "hi"}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "bad schema"
    openapi.validate("ErrorResponse", response.json())


def test_stream_that_drops_ends_with_error_and_failed_events(gateway: Any, fake_upstream: FakeUpstream,
                                                             openapi: OpenAPISchemas) -> None:
    fake_upstream.push(Reply(drop_after=2))
    response = httpx.post(gateway.url + "/v1/responses", json={"model": AUTO, "input": "hi", "stream": True},
                          timeout=10)
    events = sse_events(response.text)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"
    for event in events:
        openapi.validate("ResponseStreamEvent", event)


def test_invalid_request_names_the_param(gateway: Any) -> None:
    response = httpx.post(gateway.url + "/v1/responses", json={"model": AUTO, "input": 3}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("input")
    response = httpx.post(gateway.url + "/v1/responses", timeout=10,
                          json={"model": AUTO, "input": [{"type": "web_search_call", "id": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_parameter"


def test_explicit_small_model_is_translated(gateway: Any, fake_upstream: FakeUpstream) -> None:
    with client_for(gateway) as client:
        raw = client.responses.with_raw_response.create(model=SMALL_MODEL, input=HARD)
    assert raw.headers["x-tiergate-reason"] == "explicit_model"
    assert fake_upstream.received[-1].path == "/v1/chat/completions"
