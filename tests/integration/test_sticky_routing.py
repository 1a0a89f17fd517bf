"""Sticky conversations and capability-aware routing, driven through the gateway on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.shared_gateway import SharedPair, shared_pair

CHAT = "/v1/chat/completions"
AUTO = "tiergate-auto"
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
# "easy" scores 0.1 (small), "hard" 0.9 (large); the threshold is 0.5.
SCORES = {"hard": 0.9, "easy": 0.1}


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    with shared_pair(FixedRouter(0.1, by_keyword=SCORES), conversations={"keys": ["session", "hash"]}) as shared:
        yield shared


def chat(client: httpx.Client, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    response = client.post(CHAT, json={"model": AUTO, "messages": messages, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_five_turn_tool_loop_stays_on_its_tier_though_later_turns_score_differently(
        client: httpx.Client, fake_upstream: FakeUpstream, router: FixedRouter) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "easy question first"}]
    tiers, reasons = [], []
    try:
        for turn in range(5):
            fake_upstream.push(Reply(tool_calls=[{"id": f"call_{turn}", "name": "search", "arguments": "{}"}]))
            response = chat(client, messages, tools=TOOLS)
            tiers.append(response.headers["x-tiergate-tier"])
            reasons.append(response.headers["x-tiergate-reason"])
            call = response.json()["choices"][0]["message"]["tool_calls"][0]
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": f"result {turn}"})
            router.value, router.by_keyword = 0.95, {}  # every later turn would now score large
    finally:
        router.value, router.by_keyword = 0.1, dict(SCORES)
    assert tiers == ["small"] * 5
    assert reasons == ["score_below_threshold"] + ["sticky"] * 4
    assert len(router.seen) == 1  # only the opening turn was scored
    assert {r.body["model"] for r in fake_upstream.received} == {SMALL_MODEL}


def test_streamed_tool_call_pins_the_next_turn(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(tool_calls=[{"id": "call_stream", "name": "search", "arguments": '{"q": "y"}'}]))
    stream = client.post(CHAT, json={"model": AUTO, "stream": True, "tools": TOOLS,
                                     "messages": [{"role": "user", "content": "hard: look it up"}]})
    assert stream.headers["x-tiergate-tier"] == "large"
    messages = [{"role": "user", "content": "hard: look it up"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_stream", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_stream", "content": "easy"}]
    # The opening's hash also pins this conversation to large; the tool pin alone decides it here.
    response = chat(client, messages, tools=TOOLS)
    assert (response.headers["x-tiergate-tier"], response.headers["x-tiergate-reason"]) == ("large", "sticky")


def test_session_pin_moves_up_on_a_hard_turn_and_never_back_down(client: httpx.Client) -> None:
    session = {"x-tiergate-session": "conversation-42"}
    seen = []
    for text in ("easy hello", "easy again", "hard now", "easy after"):
        response = chat(client, [{"role": "user", "content": text}], headers=session)
        seen.append((response.headers["x-tiergate-tier"], response.headers["x-tiergate-reason"]))
    assert seen == [("small", "score_below_threshold"), ("small", "sticky"), ("large", "score_above_threshold"),
                    ("large", "sticky")]
    other = chat(client, [{"role": "user", "content": "easy hello"}], headers={"x-tiergate-session": "another"})
    assert other.headers["x-tiergate-tier"] == "small"


def test_hash_of_the_opening_pins_a_conversation_without_any_id(client: httpx.Client) -> None:
    opening = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hard opening"}]
    assert chat(client, opening).headers["x-tiergate-tier"] == "large"
    later = [*opening, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "easy thanks"}]
    response = chat(client, later)
    assert (response.headers["x-tiergate-tier"], response.headers["x-tiergate-reason"]) == ("large", "sticky")


def test_metadata_and_user_keys_are_configurable(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 conversations={"keys": ["user"], "ttl_s": 60})
    router = FixedRouter(0.1, by_keyword=SCORES)
    with running_gateway(settings, router=router) as gateway, httpx.Client(base_url=gateway.url) as client:
        chat(client, [{"role": "user", "content": "hard"}], user="u-1")
        assert chat(client, [{"role": "user", "content": "easy"}], user="u-1").headers["x-tiergate-tier"] == "large"
        assert chat(client, [{"role": "user", "content": "easy"}], user="u-2").headers["x-tiergate-tier"] == "small"
        # metadata is not a configured key here: no pin
        chat(client, [{"role": "user", "content": "hard"}], metadata={"session_id": "m"})
        response = chat(client, [{"role": "user", "content": "easy"}], metadata={"session_id": "m"})
        assert response.headers["x-tiergate-tier"] == "small"


@pytest.fixture
def no_tools_small(fake_upstream: FakeUpstream) -> Iterator[Any]:
    settings = upstream_settings(
        fake_upstream.url,  # type: ignore[attr-defined]
        tier_overrides={"small": {"capabilities": {"tools": False, "json_schema": False, "context_tokens": 100}}},
        resilience={"retry": {"attempts": 1}})
    with running_gateway(settings, router=FixedRouter(0.1, by_keyword=SCORES)) as gateway:
        yield gateway


def test_request_needing_a_capability_skips_the_tier_lacking_it(no_tools_small: Any,
                                                                 fake_upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=no_tools_small.url) as client:
        plain = chat(client, [{"role": "user", "content": "easy"}])
        assert plain.headers["x-tiergate-tier"] == "small"
        for extra in ({"tools": TOOLS}, {"response_format": {"type": "json_object"}}):
            response = chat(client, [{"role": "user", "content": "easy"}], **extra)
            assert (response.headers["x-tiergate-tier"], response.headers["x-tiergate-reason"]) == (
                "large", "capability")
        long = chat(client, [{"role": "user", "content": "easy " + "word " * 200}])
        assert long.headers["x-tiergate-reason"] == "capability"
    assert fake_upstream.received[-1].body["model"] == LARGE_MODEL


def test_explicit_model_lacking_a_capability_is_a_400_naming_it(no_tools_small: Any) -> None:
    with httpx.Client(base_url=no_tools_small.url) as client:
        response = client.post(CHAT, json={"model": SMALL_MODEL, "tools": TOOLS,
                                           "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_capability" and error["param"] == "tools"
    assert "tool calling" in error["message"] and SMALL_MODEL in error["message"]


def test_fallback_never_goes_to_a_tier_lacking_a_capability(no_tools_small: Any,
                                                            fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=503))
    with httpx.Client(base_url=no_tools_small.url) as client:
        response = client.post(CHAT, json={"model": AUTO, "tools": TOOLS,
                                           "messages": [{"role": "user", "content": "hard"}]})
    assert response.status_code == 502  # large failed; small cannot take tools, so no fallback
    assert len(fake_upstream.received) == 1


def test_no_tier_with_the_capability_is_a_400(fake_upstream: FakeUpstream) -> None:
    lacking = {"capabilities": {"vision": False}}
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 tier_overrides={"small": lacking, "large": lacking})
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    with running_gateway(settings) as gateway, httpx.Client(base_url=gateway.url) as client:
        response = client.post(CHAT, json={"model": AUTO, "messages": image})
    assert response.status_code == 400
    assert "image input" in response.json()["error"]["message"]
