"""Routing decisions end to end: what the router is shown, thresholds, fail-safe, and the decision headers."""

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
DECISION_HEADERS = ("x-tiergate-tier", "x-tiergate-model", "x-tiergate-score", "x-tiergate-threshold",
                    "x-tiergate-reason", "x-request-id")
CONVERSATION = [
    {"role": "system", "content": "SYSTEM-BOILERPLATE"},
    {"role": "user", "content": "first question about TOPIC-A"},
    {"role": "assistant", "content": "ASSISTANT-WORDS"},
    {"role": "user", "content": [
        {"type": "text", "text": "second question about TOPIC-B"},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/IMAGE-URL.png"}},
    ]},
]


def ask(client: httpx.Client, model: str = AUTO, messages: list[dict[str, Any]] | None = None,
        **kwargs: Any) -> httpx.Response:
    body = {"model": model, "messages": messages or [{"role": "user", "content": "hello"}]}
    return client.post(CHAT, json=body, **kwargs)


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    with shared_pair(FixedRouter(0.1, by_keyword={"HARD": 0.8})) as shared:
        yield shared


def test_easy_request_goes_small_with_all_decision_headers(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    response = ask(client)
    assert response.status_code == 200
    assert all(name in response.headers for name in DECISION_HEADERS)
    assert response.headers["x-tiergate-tier"] == "small"
    assert response.headers["x-tiergate-model"] == SMALL_MODEL
    assert float(response.headers["x-tiergate-score"]) == pytest.approx(0.1)
    assert float(response.headers["x-tiergate-threshold"]) == pytest.approx(0.5)
    assert response.headers["x-tiergate-reason"] == "score_below_threshold"
    assert fake_upstream.received[-1].body["model"] == SMALL_MODEL


def test_hard_request_goes_large_and_large_model_answers(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    response = ask(client, messages=[{"role": "user", "content": "a HARD proof"}])
    assert response.headers["x-tiergate-tier"] == "large"
    assert response.headers["x-tiergate-model"] == LARGE_MODEL
    assert response.headers["x-tiergate-reason"] == "score_above_threshold"
    assert response.json()["model"] == LARGE_MODEL
    assert fake_upstream.received[-1].body["model"] == LARGE_MODEL


def test_streamed_answers_carry_the_decision_headers_too(client: httpx.Client) -> None:
    response = client.post(CHAT, json={"model": AUTO, "messages": [{"role": "user", "content": "HARD"}],
                                       "stream": True})
    assert response.status_code == 200
    assert all(name in response.headers for name in DECISION_HEADERS)
    assert response.headers["x-tiergate-tier"] == "large"


def test_request_id_is_echoed_when_sane_and_generated_otherwise(client: httpx.Client) -> None:
    given = ask(client, headers={"x-request-id": "client-id-42"})
    missing = ask(client)
    too_long = ask(client, headers={"x-request-id": "x" * 500})
    assert given.headers["x-request-id"] == "client-id-42"
    assert len(missing.headers["x-request-id"]) >= 16
    assert too_long.headers["x-request-id"] != "x" * 500
    assert missing.headers["x-request-id"] != too_long.headers["x-request-id"]


def test_router_sees_every_user_turn_but_not_system_assistant_or_images(
    client: httpx.Client, router: FixedRouter
) -> None:
    assert ask(client, messages=CONVERSATION).status_code == 200
    (text,) = router.seen
    assert "TOPIC-A" in text and "TOPIC-B" in text
    assert text.index("TOPIC-B") < text.index("TOPIC-A")  # the newest turn leads
    for absent in ("SYSTEM-BOILERPLATE", "ASSISTANT-WORDS", "IMAGE-URL"):
        assert absent not in text


def test_hard_word_in_an_earlier_turn_still_routes_large(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "a HARD question"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and go on"}]
    assert ask(client, messages=messages).headers["x-tiergate-tier"] == "large"


def test_system_prompt_is_scored_when_configured(fake_upstream: FakeUpstream) -> None:
    router = FixedRouter(0.1)
    settings = upstream_settings(fake_upstream.url, routing={"include_system_prompt": True})  # type: ignore[attr-defined]
    with running_gateway(settings, router=router) as server, httpx.Client(base_url=server.url) as client:
        assert ask(client, messages=CONVERSATION).status_code == 200
    assert "SYSTEM-BOILERPLATE" in router.seen[0]


def test_model_suffix_overrides_the_threshold(client: httpx.Client) -> None:
    response = ask(client, model=f"{AUTO}@0.05")
    assert response.status_code == 200
    assert response.headers["x-tiergate-tier"] == "large"
    assert float(response.headers["x-tiergate-threshold"]) == pytest.approx(0.05)


def test_threshold_header_overrides_the_threshold(client: httpx.Client) -> None:
    response = ask(client, headers={"x-tiergate-threshold": "0.1"})  # score 0.1 >= 0.1 -> large
    assert response.headers["x-tiergate-tier"] == "large"
    assert float(response.headers["x-tiergate-threshold"]) == pytest.approx(0.1)


def test_model_suffix_wins_over_the_threshold_header(client: httpx.Client) -> None:
    response = ask(client, model=f"{AUTO}@0.9", headers={"x-tiergate-threshold": "0.0"})
    assert response.headers["x-tiergate-tier"] == "small"
    assert float(response.headers["x-tiergate-threshold"]) == pytest.approx(0.9)


def test_invalid_thresholds_are_400_naming_where_they_came_from(
    client: httpx.Client, fake_upstream: FakeUpstream, subtests: pytest.Subtests
) -> None:
    cases = [
        ({"model": f"{AUTO}@1.5"}, "model"),
        ({"model": f"{AUTO}@-0.1"}, "model"),
        ({"model": f"{AUTO}@abc"}, "model"),
        ({"model": f"{AUTO}@"}, "model"),
        ({"model": f"{AUTO}@nan"}, "model"),
        ({"headers": {"x-tiergate-threshold": "2"}}, "x-tiergate-threshold"),
        ({"headers": {"x-tiergate-threshold": "high"}}, "x-tiergate-threshold"),
    ]
    for kwargs, param in cases:
        with subtests.test(case=str(kwargs)):
            response = ask(client, **kwargs)
            assert response.status_code == 400
            assert response.json()["error"]["param"] == param
            assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake_upstream.received == []


def test_classifier_failure_answers_on_the_fail_safe_tier(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(fail=True)) as server, httpx.Client(base_url=server.url) as client:
        response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-tiergate-tier"] == "large"
    assert response.headers["x-tiergate-model"] == LARGE_MODEL
    assert response.headers["x-tiergate-reason"] == "classifier_error"
    assert response.headers["x-tiergate-score"] == ""
    assert fake_upstream.received[-1].body["model"] == LARGE_MODEL


def test_slow_classifier_times_out_to_the_fail_safe_tier(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, routing={"classifier": {"timeout_s": 0.1}})  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.0, delay=2)) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:
        response = ask(client)
    assert response.status_code == 200
    assert response.headers["x-tiergate-reason"] == "classifier_error"
    assert response.headers["x-tiergate-tier"] == "large"


@pytest.mark.parametrize("stream", [False, True])
def test_headers_name_the_tier_that_answered_after_a_fallback(fake_upstream: FakeUpstream, stream: bool) -> None:
    settings = upstream_settings(fake_upstream.url, resilience={"retry": {"attempts": 1}})  # type: ignore[attr-defined]
    fake_upstream.push(Reply(status=500))  # the small tier fails once; the large tier answers
    with running_gateway(settings, router=FixedRouter(0.1)) as server, httpx.Client(base_url=server.url) as client:
        response = client.post(CHAT, json={"model": AUTO, "messages": [{"role": "user", "content": "hi"}],
                                           "stream": stream})
    assert response.status_code == 200
    assert response.headers["x-tiergate-tier"] == "large"
    assert response.headers["x-tiergate-model"] == LARGE_MODEL
    assert response.headers["x-tiergate-reason"] == "fallback"
    assert [r.body["model"] for r in fake_upstream.received] == [SMALL_MODEL, LARGE_MODEL]
