"""The official ``openai`` SDK, sync and async, streaming and not, works against the gateway unchanged."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway.tools.fake_upstream import FakeUpstream, Reply, ServerThread
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.shared_gateway import SharedPair, shared_pair

AUTO = "tiergate-auto"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
ANSWER = "Hello from the fake upstream."
GATEWAY_KEY = "tg-contract-test-key"


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    with shared_pair(FixedRouter(0.1, by_keyword={"prove": 0.9})) as shared:
        yield shared


def sync_client(server: ServerThread, api_key: str = "unused") -> openai.OpenAI:
    # No SDK retries: each test sees exactly the status the gateway answered.
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=10)


def async_client(server: ServerThread, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=10)


def test_sync_completion_parses_with_usage_and_routing_headers(gateway: ServerThread) -> None:
    with sync_client(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(model=AUTO, messages=MESSAGES)
        completion = raw.parse()
    assert completion.choices[0].message.content == ANSWER
    assert completion.model == SMALL_MODEL
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-tiergate-tier"] == "small"
    assert raw.headers["x-tiergate-model"] == SMALL_MODEL


def test_sync_stream_yields_the_whole_answer(gateway: ServerThread) -> None:
    with sync_client(gateway) as client:
        stream = client.chat.completions.create(model=AUTO, messages=MESSAGES, stream=True)
        with stream:
            chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == ANSWER.split()
    assert all(chunk.usage is None for chunk in chunks)


def test_sync_stream_reports_usage_when_asked(gateway: ServerThread) -> None:
    with sync_client(gateway) as client:
        stream = client.chat.completions.create(model=AUTO, messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True})
        with stream:
            chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_async_completion_routes_hard_prompts_large(gateway: ServerThread) -> None:
    async with async_client(gateway) as client:
        completion = await client.chat.completions.create(
            model=AUTO, messages=[{"role": "user", "content": "prove the Riemann hypothesis"}])
    assert completion.model == LARGE_MODEL
    assert completion.choices[0].message.content == ANSWER


async def test_async_stream_yields_the_whole_answer(gateway: ServerThread) -> None:
    async with async_client(gateway) as client:
        stream = await client.chat.completions.create(model=SMALL_MODEL, messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ANSWER.split()
    assert {chunk.model for chunk in chunks} == {SMALL_MODEL}


def test_sdk_lists_the_gateway_models(gateway: ServerThread) -> None:
    with sync_client(gateway) as client:
        names = [model.id for model in client.models.list()]
    assert names == [AUTO, SMALL_MODEL, LARGE_MODEL]


def test_sdk_passes_tools_and_json_schema_through(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    with sync_client(gateway) as client:
        client.chat.completions.create(model=AUTO, messages=MESSAGES, tools=tools, response_format=response_format,
                                       seed=3, extra_body={"vendor_knob": True})
    sent = fake_upstream.received[-1].body
    assert (sent["tools"], sent["response_format"], sent["seed"], sent["vendor_knob"]) == (
        tools, response_format, 3, True)


def test_invalid_parameter_raises_bad_request_error(gateway: ServerThread) -> None:
    with sync_client(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=AUTO, messages=MESSAGES, temperature=5)
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"


async def test_async_invalid_threshold_raises_bad_request_error(gateway: ServerThread) -> None:
    async with async_client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=f"{AUTO}@2", messages=MESSAGES)
    assert caught.value.param == "model"


def test_unknown_model_raises_not_found_error(gateway: ServerThread) -> None:
    with sync_client(gateway) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-unknown", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


async def test_async_stream_to_unknown_model_raises_not_found_error(gateway: ServerThread) -> None:
    async with async_client(gateway) as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="gpt-unknown", messages=MESSAGES, stream=True)


def test_upstream_rate_limit_raises_rate_limit_error(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=429, headers={"retry-after": "60"}))
    with sync_client(gateway) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=AUTO, messages=MESSAGES)


def test_upstream_failure_raises_api_error(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=500))
    with sync_client(gateway) as client, pytest.raises(openai.APIError) as caught:
        client.chat.completions.create(model=AUTO, messages=MESSAGES)
    assert isinstance(caught.value, openai.InternalServerError)
    assert caught.value.status_code == 502


def test_mid_stream_failure_raises_api_error_in_the_sdk(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=5, drop_after=2, content="a b c d e"))
    received: list[Any] = []
    with sync_client(gateway) as client:
        stream = client.chat.completions.create(model=AUTO, messages=MESSAGES, stream=True)
        with stream, pytest.raises(openai.APIError) as caught:
            for chunk in stream:  # the loop is what raises, so no list(stream)
                received.append(chunk)  # noqa: PERF402
    assert len(received) == 2  # what arrived before the drop was delivered
    assert "upstream" in caught.value.message


async def test_async_mid_stream_failure_raises_api_error(gateway: ServerThread, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=5, drop_after=2, content="a b c d e"))
    async with async_client(gateway) as client:
        stream = await client.chat.completions.create(model=AUTO, messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


@pytest.mark.skipif(importlib.util.find_spec("gateway.admission.auth") is None, reason="gateway API keys (gateway/admission/auth.py) "
                    "are not implemented yet")
def test_wrong_gateway_key_raises_authentication_error(fake_upstream: FakeUpstream) -> None:
    from gateway.admission.auth import hash_key

    auth = {"keys": [{"name": "contract", "hash": hash_key(GATEWAY_KEY)}]}
    settings = upstream_settings(fake_upstream.url, auth=auth)  # type: ignore[attr-defined]
    with running_gateway(settings) as server:
        with sync_client(server, api_key="tg-wrong") as client, pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model=AUTO, messages=MESSAGES)
        with sync_client(server, api_key=GATEWAY_KEY) as client:
            completion = client.chat.completions.create(model=AUTO, messages=MESSAGES)
    assert caught.value.status_code == 401
    assert GATEWAY_KEY not in str(caught.value) and "tg-wrong" not in str(caught.value)
    assert completion.choices[0].message.content == ANSWER
    assert len(fake_upstream.received) == 1  # the rejected request never reached the upstream
