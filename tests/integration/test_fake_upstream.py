"""The fake upstream itself: it answers, streams, follows its script and records what it received."""

from __future__ import annotations

import httpx

from gateway.tools.fake_upstream import FakeUpstream, Reply

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


def test_fake_answers_json_with_usage(fake_upstream: FakeUpstream) -> None:
    answer = httpx.post(fake_upstream.url + "/v1/chat/completions", json=BODY).json()  # type: ignore[attr-defined]
    assert answer["object"] == "chat.completion"
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    assert fake_upstream.received[0].body == BODY


def test_fake_streams_usage_only_when_asked(fake_upstream: FakeUpstream) -> None:
    url = fake_upstream.url + "/v1/chat/completions"  # type: ignore[attr-defined]
    plain = httpx.post(url, json={**BODY, "stream": True}).text
    with_usage = httpx.post(url, json={**BODY, "stream": True, "stream_options": {"include_usage": True}}).text
    assert plain.endswith("data: [DONE]\n\n") and '"usage"' not in plain
    assert '"usage"' in with_usage


def test_fake_follows_script_in_order(fake_upstream: FakeUpstream) -> None:
    url = fake_upstream.url + "/v1/chat/completions"  # type: ignore[attr-defined]
    fake_upstream.push(Reply(status=503), Reply(status=429, headers={"retry-after": "3"}))
    assert httpx.post(url, json=BODY).status_code == 503
    second = httpx.post(url, json=BODY)
    assert (second.status_code, second.headers["retry-after"]) == (429, "3")
    assert httpx.post(url, json=BODY).status_code == 200


def test_fake_drops_stream_midway(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(drop_after=1))
    url = fake_upstream.url + "/v1/chat/completions"  # type: ignore[attr-defined]
    try:
        text = httpx.post(url, json={**BODY, "stream": True}).text
    except httpx.HTTPError:
        text = ""
    assert "[DONE]" not in text
