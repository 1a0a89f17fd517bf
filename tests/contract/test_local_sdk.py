"""The embedded default's in-process tiers at parity, through the official SDK: structured output with
grammar-constrained decoding (``parse``), tool calls through Qwen2.5's chat template, ``refusal: null``, and
the Responses API translated for them, checked against OpenAI's schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel

from gateway.backends.local.models import prepare_builtin
from gateway.settings import Settings
from gateway.tools.fake_upstream import ServerThread
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway
from tests.support.openapi import OpenAPISchemas, schemas_or_skip

pytest.importorskip("llguidance", reason="grammar-constrained decoding needs llguidance (the local extra)")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SMALL, LARGE = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.fixture(scope="session")
def openapi(pytestconfig: pytest.Config) -> OpenAPISchemas:
    return schemas_or_skip(pytestconfig)


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerThread]:
    for name in ("smollm2", "qwen2.5-coder-0.5b"):
        try:
            prepare_builtin(name)
        except Exception as exc:  # the model packages are not installed on this machine
            pytest.skip(f"builtin:{name} is not available: {exc}")
    common = {"kind": "transformers", "threads": 1, "max_new_tokens": 48, "default_temperature": 0.0,
              "max_queue": 4}
    settings = Settings(
        tiers={"small": {**common, "model": SMALL, "path": "builtin:smollm2"},
               "large": {**common, "model": LARGE, "path": "builtin:qwen2.5-coder-0.5b", "quantize": "int8"}},
        server={"load_before_serving": True}, prices_file=None)
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        yield server


def client_for(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.mark.parametrize("model", [SMALL, LARGE])
def test_parse_returns_a_pydantic_object_from_each_local_tier(gateway: ServerThread, model: str) -> None:
    with client_for(gateway) as client:
        completion = client.chat.completions.parse(
            model=model, response_format=Weather,
            messages=[{"role": "user", "content": "Paris has 21 degrees today. Answer as JSON."}])
    message = completion.choices[0].message
    assert isinstance(message.parsed, Weather)
    assert message.refusal is None


def test_json_object_streams_valid_json_with_refusal_null(gateway: ServerThread) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=600, json={
        "model": SMALL, "stream": True, "response_format": {"type": "json_object"}, "max_tokens": 40,
        "messages": [{"role": "user", "content": "Give a JSON object describing a cat."}]})
    chunks = [orjson.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    if chunks[-2]["choices"][0]["finish_reason"] == "stop":  # complete: the grammar guarantees an object
        assert isinstance(orjson.loads(text), dict)
    else:
        assert text.startswith("{")


def test_tools_are_routed_away_from_a_template_without_them(gateway: ServerThread) -> None:
    with client_for(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="tiergate-auto", messages=ASK, tools=[WEATHER_TOOL], tool_choice="required")  # type: ignore[list-item]
        assert (raw.headers["x-tiergate-tier"], raw.headers["x-tiergate-reason"]) == ("large", "capability")
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=SMALL, messages=ASK, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert caught.value.code == "unsupported_capability" and caught.value.param == "tools"


def test_two_step_tool_loop_completes_on_the_local_tier(gateway: ServerThread, openapi: OpenAPISchemas) -> None:
    with client_for(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="tiergate-auto", messages=ASK, tools=[WEATHER_TOOL], tool_choice="required")  # type: ignore[list-item]
        first = raw.parse()
        openapi.validate("CreateChatCompletionResponse", orjson.loads(raw.http_response.content))
        message = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls" and message.tool_calls
        call = message.tool_calls[0]
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert "city" in orjson.loads(call.function.arguments)  # type: ignore[union-attr]
        follow = client.chat.completions.with_raw_response.create(
            model="tiergate-auto", tools=[WEATHER_TOOL],  # type: ignore[list-item]
            messages=[*ASK, message.model_dump(exclude_none=True),  # type: ignore[list-item]
                      {"role": "tool", "tool_call_id": call.id, "content": "21 C and sunny"}])
    assert (follow.headers["x-tiergate-tier"], follow.headers["x-tiergate-reason"]) == ("large", "sticky")
    answer = follow.parse().choices[0]
    assert answer.message.content or answer.message.tool_calls
    assert answer.message.refusal is None


def test_streamed_tool_call_arrives_as_deltas(gateway: ServerThread) -> None:
    with client_for(gateway) as client:
        stream = client.chat.completions.create(model=LARGE, messages=ASK, tools=[WEATHER_TOOL],  # type: ignore[list-item]
                                                tool_choice="required", stream=True)
        chunks = list(stream)
    calls = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    arguments = "".join((d.function.arguments or "") for d in calls if d.function)
    assert "city" in orjson.loads(arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_responses_api_on_the_local_tier(gateway: ServerThread, openapi: OpenAPISchemas) -> None:
    with client_for(gateway) as client:
        raw = client.responses.with_raw_response.create(model=SMALL, input="Say hello.", max_output_tokens=16)
        openapi.validate("Response", orjson.loads(raw.http_response.content))
        assert raw.parse().output_text
        parsed = client.responses.parse(model=LARGE, text_format=Weather,
                                        input="Paris has 21 degrees today. Answer as JSON.")
        assert isinstance(parsed.output_parsed, Weather)
        stream = client.responses.create(model=SMALL, input="Say hello.", max_output_tokens=8, stream=True)
        events = list(stream)
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    for event in events:
        openapi.validate("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
