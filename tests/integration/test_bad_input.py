"""Hostile input on loopback: each malformed request gets the right 4xx in OpenAI's shape, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
GOOD = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerThread]:
    fake = FakeUpstream()
    fake.keep_received = False
    with ServerThread(fake) as upstream:
        config = upstream_settings(upstream.url, server={"max_body_bytes": 64 * 1024},
                                   limits={"max_messages": 64, "max_total_chars": 20_000})
        with running_gateway(config, router=FixedRouter(0.3, by_keyword={"large": 0.9})) as server:
            yield server


@pytest.fixture(scope="module")
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize("raw", [b"", b"{", b"{'model': 1}", b"[]", b"null", b"42", b'"text"',
                                 b'{"model": "x", "messages": [NaN]}', b"\xff\xfe{}", b'{"a": "\xc3\x28"}',
                                 b'{"model": "tiergate-auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
                                 b'{"model": "tiergate-auto", "temperature": 1e400, "messages": []}'])
def test_malformed_json_is_400(client: httpx.Client, raw: bytes) -> None:
    error = assert_error(client.post(CHAT, content=raw, headers={"content-type": "application/json"}), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("patch", "param"), [
    ({"model": 5}, "model"),
    ({"model": ""}, "model"),
    ({"messages": "hello"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": 123456789012345678901234567890}, "max_tokens"),
    ({"n": 0}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stop": 5}, "stop"),
    ({"stream_options": []}, "stream_options"),
])
def test_wrong_types_and_values_name_the_param(client: httpx.Client, patch: dict[str, Any], param: str) -> None:
    assert_error(client.post(CHAT, json={**GOOD, **patch}), 400, param)


def test_unknown_model_is_404(client: httpx.Client) -> None:
    assert_error(client.post(CHAT, json={**GOOD, "model": "gpt-99"}), 404, "model")


def test_huge_body_is_413_declared_or_chunked(client: httpx.Client) -> None:
    big = orjson.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 100_000}]})
    assert_error(client.post(CHAT, content=big, headers={"content-type": "application/json"}), 413)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    assert_error(client.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)


@pytest.mark.parametrize("depth", [100, 300, 1100])
def test_deep_nesting_is_400(client: httpx.Client, depth: int) -> None:
    raw = b'{"model": "tiergate-auto", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + (
        b"[" * depth + b"]" * depth + b"}")
    assert_error(client.post(CHAT, content=raw, headers={"content-type": "application/json"}), 400)


def test_too_many_messages_and_characters_are_400(client: httpx.Client) -> None:
    many = [{"role": "user", "content": "hi"}] * 65
    assert_error(client.post(CHAT, json={**GOOD, "messages": many}), 400, "messages")
    wide = [{"role": "user", "content": "y" * 20_001}]
    assert_error(client.post(CHAT, json={**GOOD, "messages": wide}), 400, "messages")


def test_gateway_still_answers_after_the_abuse(client: httpx.Client) -> None:
    assert client.post(CHAT, json=GOOD).status_code == 200


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                       | TEXT, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                       max_leaves=8)
CONTENT = st.one_of(TEXT, st.none(), st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url",
                                                                                               "x"])},
                                                                     optional={"text": JSONISH}), max_size=3),
                    JSONISH)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "developer",
                                                          "wizard", ""])},
                                optional={"content": CONTENT, "name": JSONISH, "tool_calls": JSONISH})
PARAMS = st.fixed_dictionaries({}, optional={
    "temperature": JSONISH, "top_p": st.floats(allow_nan=False, allow_infinity=False), "max_tokens": JSONISH,
    "n": st.integers(-2, 200), "stop": JSONISH, "seed": JSONISH, "stream": st.booleans(), "tools": JSONISH,
    "response_format": JSONISH, "stream_options": JSONISH, "logit_bias": JSONISH, "user": JSONISH,
    "model": st.sampled_from(["tiergate-auto", "tiergate-auto@0.2", "tiergate-auto@x", "gpt-4o", "nope"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(messages=st.lists(MESSAGE, max_size=4), params=PARAMS)
def test_fuzzed_requests_never_get_a_500(client: httpx.Client, messages: list[Any], params: dict[str, Any]) -> None:
    body = {"model": "tiergate-auto", "messages": messages, **params}
    response = client.post(CHAT, content=orjson.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    elif body.get("stream"):
        assert response.text.endswith("data: [DONE]\n\n")
