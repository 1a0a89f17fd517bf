"""Upstream failures reach the client as the right HTTP status, or in-band once a stream has started."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.settings import Settings
from gateway.tools.fake_upstream import FakeUpstream, Reply, ServerThread
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**BODY, "stream": True}
# One try, no other tier: each failure is seen exactly as the upstream produced it.
NO_RETRY_NO_FALLBACK = {"retry": {"attempts": 1}, "fallback": {"failures": []}}
ERROR_KEYS = {"message", "type", "param", "code"}


def settings_for(url: str, **sections: Any) -> Settings:
    return upstream_settings(url, resilience=NO_RETRY_NO_FALLBACK, **sections)


def sse_data(text: str) -> list[str]:
    return [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]


async def start_sse(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})


async def send_event(send: Any, payload: Any, more: bool = True) -> None:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": more})


def hi_chunk(model: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]}


@pytest.fixture
def gateway(fake_upstream: FakeUpstream) -> Iterator[ServerThread]:
    with running_gateway(settings_for(fake_upstream.url), router=FixedRouter(0.1)) as server:  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


def test_upstream_400_passes_through_with_its_error_fields(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    upstream_error = {"message": "This model's maximum context length is 128000 tokens.",
                      "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    fake_upstream.push(Reply(status=400, body={"error": upstream_error}))
    response = client.post(CHAT, json=BODY, headers={"x-request-id": "req-400"})
    assert response.status_code == 400
    assert response.json() == {"error": upstream_error}
    assert response.headers["x-request-id"] == "req-400"
    assert response.headers["x-tiergate-tier"] == "small"


def test_upstream_redirect_is_a_502_that_names_the_new_address(client: httpx.Client,
                                                                fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=308, body={}, headers={"location": "https://moved.example/v1/chat/completions"}))
    response = client.post(CHAT, json=BODY)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "308" in message and "https://moved.example/v1/chat/completions" in message


def test_upstream_429_passes_through_with_retry_after(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
    fake_upstream.push(Reply(status=429, body=body, headers={"retry-after": "30"}))
    response = client.post(CHAT, json=BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(fake_upstream.received) == 1


def test_upstream_500_becomes_502_in_openai_error_shape(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=500))
    response = client.post(CHAT, json=BODY)
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["message"] == "scripted failure"


def test_upstream_error_body_not_in_openai_shape_is_wrapped(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(status=503, body={"detail": "overloaded, try later"}))
    response = client.post(CHAT, json=BODY)
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert "overloaded, try later" in error["message"]


def test_upstream_hang_is_504(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(delay=3))  # the read timeout in upstream_settings is 2 s
    response = client.post(CHAT, json=BODY)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["type"] == "upstream_timeout"
    assert error["code"] == "upstream_timeout"


def test_stream_hang_before_the_first_chunk_is_504_not_a_broken_200(fake_upstream: FakeUpstream) -> None:
    fast_timeout = {"timeout": {"connect": 2, "read": 0.5, "write": 2, "pool": 2}}
    settings = settings_for(fake_upstream.url, tier_overrides={"small": fast_timeout})  # type: ignore[attr-defined]
    fake_upstream.push(Reply(delay=1))
    with running_gateway(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(CHAT, json=STREAM)
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_unreachable_upstream_is_502() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with running_gateway(settings_for(dead)) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(CHAT, json=BODY)
        streamed = client.post(CHAT, json=STREAM)
    for answer in (response, streamed):
        assert answer.status_code == 502
        assert answer.json()["error"]["type"] == "upstream_error"


def test_stream_sends_error_event_then_done_when_upstream_drops(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=5, drop_after=2, content="a b c d e"))
    response = client.post(CHAT, json=STREAM)
    assert response.status_code == 200  # the failure came after the first byte: it can only travel in-band
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    assert data.count("[DONE]") == 1
    events = [orjson.loads(item) for item in data[:-1]]
    assert [event["object"] for event in events[:-1]] == ["chat.completion.chunk"] * 2
    error = events[-1]["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "upstream_error"


def test_stream_sends_error_event_when_upstream_reports_an_error_event(fake_upstream: FakeUpstream) -> None:
    class ErrorMidStream(FakeUpstream):
        """Streams one chunk, then an OpenAI-style in-band error event."""

        async def _stream(self, send: Any, receive: Any, body: dict[str, Any], reply: Reply, rec: Any) -> None:
            await start_sse(send)
            await send_event(send, hi_chunk(body["model"]))
            await send_event(send, {"error": {"message": "the model overloaded mid-answer", "type": "server_error",
                                              "param": None, "code": None}})
            await send_event(send, b"[DONE]", more=False)

    upstream = ErrorMidStream()
    with ServerThread(upstream) as fake, running_gateway(settings_for(fake.url)) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:
        response = client.post(CHAT, json=STREAM)
    assert response.status_code == 200
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    assert "the model overloaded mid-answer" in orjson.loads(data[-2])["error"]["message"]


def test_stream_sends_timeout_event_then_done_when_upstream_stalls_mid_stream() -> None:
    class StallAfterFirstChunk(FakeUpstream):
        """Streams one chunk, then goes silent for longer than the gateway's read timeout."""

        async def _stream(self, send: Any, receive: Any, body: dict[str, Any], reply: Reply, rec: Any) -> None:
            await start_sse(send)
            await send_event(send, hi_chunk(body["model"]))
            await asyncio.sleep(1.5)

    fast_timeout = {"timeout": {"connect": 2, "read": 0.5, "write": 2, "pool": 2}}
    upstream = StallAfterFirstChunk()
    with ServerThread(upstream) as fake:
        settings = settings_for(fake.url, tier_overrides={"small": fast_timeout})
        with running_gateway(settings) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            response = client.post(CHAT, json=STREAM)
    assert response.status_code == 200
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    assert orjson.loads(data[0])["choices"][0]["delta"]["content"] == "hi"
    assert orjson.loads(data[-2])["error"]["type"] == "upstream_timeout"


@pytest.mark.parametrize(("status", "expected"), [(400, 400), (429, 429), (500, 502)])
def test_stream_failing_before_the_first_chunk_gets_a_real_status(
    client: httpx.Client, fake_upstream: FakeUpstream, status: int, expected: int
) -> None:
    fake_upstream.push(Reply(status=status))
    response = client.post(CHAT, json=STREAM)
    assert response.status_code == expected
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()["error"]) == ERROR_KEYS


@pytest.mark.parametrize("payload", [b"<html>Bad gateway</html>", b"[1, 2]"], ids=["not-json", "not-an-object"])
def test_upstream_200_that_is_not_a_completion_object_is_502(payload: bytes) -> None:
    class Garbage(FakeUpstream):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await super().__call__(scope, receive, send)
            while (await receive()).get("more_body"):
                pass
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
            await send({"type": "http.response.body", "body": payload})
            return None

    with ServerThread(Garbage()) as fake, running_gateway(settings_for(fake.url)) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:
        response = client.post(CHAT, json=BODY)
    assert response.status_code == 502
    assert set(response.json()["error"]) == ERROR_KEYS


class BreaksAfterFirstChunk:
    """A backend whose stream yields one chunk, then fails with a bug (not a GatewayError)."""

    name = "broken"
    model = "gpt-4o-mini"

    async def start(self) -> None: ...

    def ready(self) -> bool:
        return True

    async def complete(self, body: dict[str, Any], client_headers: dict[str, str] | None = None) -> dict[str, Any]:
        raise AssertionError("not used")

    async def stream(self, body: dict[str, Any],
                     client_headers: dict[str, str] | None = None) -> Any:
        yield {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": self.model,
               "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
        raise RuntimeError("a bug in the middle of a stream")

    async def aclose(self) -> None: ...


def test_stream_still_ends_with_done_when_a_chunk_breaks_the_gateway() -> None:
    broken = BreaksAfterFirstChunk()
    settings = settings_for("http://127.0.0.1:9")
    with running_gateway(settings, backends={"small": broken, "large": broken}) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:
        response = client.post(CHAT, json=STREAM)
    assert response.status_code == 200
    data = sse_data(response.text)
    assert orjson.loads(data[0])["choices"][0]["delta"]["content"] == "hi"
    assert data[-1] == "[DONE]", "a failure inside the gateway cut the stream off"
    assert set(orjson.loads(data[-2])["error"]) == ERROR_KEYS


def test_stream_ignores_usage_values_that_are_not_counts() -> None:
    class OddUsage(FakeUpstream):
        """A well-formed stream whose usage chunk holds a value no accounting expects."""

        async def _stream(self, send: Any, receive: Any, body: dict[str, Any], reply: Reply, rec: Any) -> None:
            await start_sse(send)
            await send_event(send, hi_chunk(body["model"]))
            await send_event(send, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                                    "choices": [], "usage": {"prompt_tokens": "lots", "completion_tokens": 1}})
            await send_event(send, b"[DONE]", more=False)

    with ServerThread(OddUsage()) as fake, running_gateway(settings_for(fake.url)) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:
        response = client.post(CHAT, json={**STREAM, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    assert "error" not in response.text
