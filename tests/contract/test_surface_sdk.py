"""The endpoints beside chat through the official SDK: models.retrieve, embeddings, completions, unknown paths."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.openapi import OpenAPISchemas, schemas_or_skip
from tests.support.prom import sample
from tests.support.shared_gateway import SharedPair, shared_pair

KEY = "tg-surface-test-key"
EMBEDDING_MODEL = "text-embedding-3-small"
INSTRUCT_MODEL = "gpt-3.5-turbo-instruct"


@pytest.fixture(scope="session")
def openapi(pytestconfig: pytest.Config) -> OpenAPISchemas:
    return schemas_or_skip(pytestconfig)


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    overrides = {"large": {"embeddings": True, "completions": True}}
    auth = {"keys": [{"name": "surface", "hash": hash_key(KEY)}]}
    with shared_pair(FixedRouter(0.1), tier_overrides=overrides, auth=auth) as shared:
        yield shared


def client_for(server: Any, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)


def test_models_retrieve_answers_each_listed_model(gateway: Any, openapi: OpenAPISchemas) -> None:
    with client_for(gateway) as client:
        listed = [model.id for model in client.models.list()]
        assert listed == ["tiergate-auto", SMALL_MODEL, LARGE_MODEL]
        for name in listed:
            assert client.models.retrieve(name).id == name
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("gpt-nope")
    assert caught.value.code == "model_not_found"
    raw = httpx.get(gateway.url + "/v1/models/" + SMALL_MODEL, headers={"authorization": f"Bearer {KEY}"})
    openapi.validate("Model", raw.json())


def test_embeddings_go_to_the_configured_tier_as_sent(gateway: Any, fake_upstream: FakeUpstream,
                                                      openapi: OpenAPISchemas) -> None:
    with client_for(gateway) as client:
        raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input=["one two", "three"],
                                                         encoding_format="float")
        result = raw.parse()
    assert [item.index for item in result.data] == [0, 1] and result.usage.prompt_tokens == 3
    assert raw.headers["x-tiergate-tier"] == "large" and raw.headers["x-tiergate-reason"] == "explicit_model"
    sent = fake_upstream.received[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body == {"model": EMBEDDING_MODEL, "input": ["one two", "three"], "encoding_format": "float"}
    assert sent.headers.get("authorization") != f"Bearer {KEY}"
    openapi.validate("CreateEmbeddingResponse", raw.http_response.json())


@pytest.mark.parametrize("stream", [False, True])
def test_completions_are_forwarded_json_and_stream(gateway: Any, fake_upstream: FakeUpstream,
                                                   openapi: OpenAPISchemas, stream: bool) -> None:
    with client_for(gateway) as client:
        if stream:
            chunks = list(client.completions.create(model=INSTRUCT_MODEL, prompt="Say hi", stream=True,
                                                    stream_options={"include_usage": True}))
            text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        else:
            completion = client.completions.create(model=INSTRUCT_MODEL, prompt="Say hi", max_tokens=5)
            text = completion.choices[0].text
            payload = completion.model_dump(exclude_unset=True)
            openapi.validate("CreateCompletionResponse", payload)
    assert text.split() == "Hello from the fake upstream.".split()
    sent = fake_upstream.received[-1]
    assert sent.path == "/v1/completions" and sent.body["model"] == INSTRUCT_MODEL


def test_forwarded_endpoints_are_authenticated_accounted_and_counted(gateway: Any) -> None:
    with client_for(gateway, key="wrong") as client, pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model=EMBEDDING_MODEL, input="x")
    with client_for(gateway) as client:
        raw = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input="a b c d")
        assert "x-tiergate-cost-usd" in raw.headers
    metrics = httpx.get(gateway.url + "/metrics").text
    assert sample(metrics, "tiergate_routing_decisions_total", tier="large", reason="explicit_model") >= 1
    assert sample(metrics, "tiergate_prompt_tokens_total", model=EMBEDDING_MODEL) >= 4


def test_upstream_error_on_a_forwarded_endpoint_passes_through(gateway: Any, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=400, body={"error": {"message": "input too long", "type": "invalid_request_error",
                                                         "param": "input", "code": None}}))
    with client_for(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input="x")
    assert caught.value.param == "input"


def test_no_tier_serving_embeddings_is_a_404(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway, client_for(gateway) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            client.embeddings.create(model=EMBEDDING_MODEL, input="x")
    assert "embeddings: true" in caught.value.message


def test_unknown_v1_path_is_an_openai_404_naming_the_served_endpoints(gateway: Any,
                                                                      openapi: OpenAPISchemas) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    response = httpx.post(gateway.url + "/v1/audio/speech", json={}, headers=auth)
    assert response.status_code == 404
    openapi.validate("ErrorResponse", response.json())
    message = response.json()["error"]["message"]
    for endpoint in ("POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models/{model}",
                     "POST /v1/embeddings", "POST /v1/completions"):
        assert endpoint in message
    wrong_method = httpx.get(gateway.url + "/v1/embeddings", headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
