"""Streaming chat answers (SSE) through the real gateway and a fake upstream on loopback TCP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.accounting import RequestOutcome
from gateway.tools.fake_upstream import FakeUpstream, Reply, ServerThread, stream_events
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.shared_gateway import SharedPair, shared_pair

CHAT = "/v1/chat/completions"
AUTO = "tiergate-auto"
MESSAGES = [{"role": "user", "content": "tell me a story"}]
CONTENT = "one two three four five six"


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    events = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                events.append(line[5:].strip())
    return events


def chunks_of(text: str) -> list[dict[str, Any]]:
    data = sse_data(text)
    assert data[-1] == "[DONE]", "a stream must end with data: [DONE]"
    assert data.count("[DONE]") == 1
    return [orjson.loads(item) for item in data[:-1]]


def wait_until(condition: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


@pytest.fixture(scope="module")
def pair() -> Iterator[SharedPair]:
    with shared_pair(FixedRouter(0.9)) as shared:
        yield shared


def test_stream_delivers_chunks_then_done_with_routing_headers(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(content=CONTENT, chunks=3))
    response = client.post(CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-tiergate-tier"] == "large"
    assert response.headers["x-tiergate-model"] == LARGE_MODEL
    assert response.headers["x-tiergate-reason"] == "score_above_threshold"
    assert response.headers["x-request-id"]
    chunks = chunks_of(response.text)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["model"] == LARGE_MODEL for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text.split() == CONTENT.split()
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_hides_the_usage_chunk_the_client_did_not_ask_for(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    response = client.post(CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True})
    chunks = chunks_of(response.text)
    assert all(chunk["choices"] for chunk in chunks)
    assert not any(chunk.get("usage") for chunk in chunks)
    # ...but the gateway asked for it upstream, so usage is always known for accounting.
    assert fake_upstream.received[-1].body["stream_options"] == {"include_usage": True}


def test_stream_keeps_the_usage_chunk_when_the_client_asked(client: httpx.Client) -> None:
    body = {"model": AUTO, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    chunks = chunks_of(client.post(CHAT, json=body).text)
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    assert sum(1 for chunk in chunks if chunk.get("usage")) == 1


def test_stream_forwards_body_as_sent_adding_only_include_usage(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    body = {
        "model": AUTO,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": False, "include_obfuscation": False},
        "max_completion_tokens": 64,
        "logprobs": False,
        "unknown_knob": [1, {"a": None}],
    }
    chunks = chunks_of(client.post(CHAT, json=body).text)
    assert not any(chunk.get("usage") for chunk in chunks)
    sent = fake_upstream.received[-1].body
    assert list(sent) == list(body)
    assert sent == {
        **body,
        "model": LARGE_MODEL,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
    }


def test_stream_reassembles_events_split_across_reads(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(content=CONTENT, chunks=6, split_events=True))
    chunks = chunks_of(client.post(CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True}).text)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text.split() == CONTENT.split()


def test_stream_accepts_crlf_framed_events_from_upstream() -> None:
    class CrlfUpstream(FakeUpstream):
        """Frames events with CRLF, as sse-starlette servers do (llama-cpp-python's, for one); each event is
        cut between its CR and LF to exercise reassembly."""

        async def _stream(self, send: Any, receive: Any, body: dict[str, Any], reply: Reply, rec: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for event in stream_events(body, reply):
                crlf = b": keep-alive\r\n\r\n" + event.replace(b"\n", b"\r\n")
                cut = crlf.rindex(b"\r\n") + 1
                for piece in (crlf[:cut], crlf[cut:]):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    upstream = CrlfUpstream()
    upstream.push(Reply(content=CONTENT, chunks=3))
    with ServerThread(upstream) as fake, running_gateway(upstream_settings(fake.url)) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:
        response = client.post(CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True})
    assert response.status_code == 200
    chunks = chunks_of(response.text)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text.split() == CONTENT.split()


def test_stream_to_explicit_model_is_not_routed(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    response = client.post(CHAT, json={"model": SMALL_MODEL, "messages": MESSAGES, "stream": True})
    assert response.headers["x-tiergate-tier"] == "small"
    assert response.headers["x-tiergate-reason"] == "explicit_model"
    assert {chunk["model"] for chunk in chunks_of(response.text)} == {SMALL_MODEL}


def test_client_disconnect_closes_the_upstream_stream(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=50, chunk_delay=0.05, content=" ".join(["word"] * 50)))
    with client.stream("POST", CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True}) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    assert wait_until(lambda: fake_upstream.received[-1].disconnected), "the gateway kept the upstream stream open"


def test_client_leaving_before_the_first_chunk_still_closes_the_upstream_stream(
    gateway: ServerThread, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.push(Reply(delay=0.5, chunks=80, chunk_delay=0.05, content=" ".join(["word"] * 80)))
    body = orjson.dumps({"model": AUTO, "messages": MESSAGES, "stream": True})
    head = (f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as raw:  # hangs up while the gateway primes
        raw.sendall(head + body)
        assert wait_until(lambda: len(fake_upstream.received) == 1)
    assert wait_until(lambda: fake_upstream.received[-1].disconnected), "the upstream stream ran to its end"


def test_gateway_keeps_serving_after_a_client_disconnect(client: httpx.Client, fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=50, chunk_delay=0.05, content=" ".join(["word"] * 50)))
    with client.stream("POST", CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True}) as response:
        next(response.iter_lines())
    assert wait_until(lambda: fake_upstream.received[-1].disconnected)
    again = client.post(CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True})
    assert again.status_code == 200
    assert sse_data(again.text)[-1] == "[DONE]"


class Recorder:
    """An outcome sink that keeps every finished request."""

    def __init__(self) -> None:
        self.outcomes: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.outcomes.append(outcome)


def test_stream_usage_is_recorded_even_when_the_client_did_not_ask(fake_upstream: FakeUpstream) -> None:
    recorder = Recorder()
    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    with running_gateway(settings, sinks=[recorder]) as server, httpx.Client(base_url=server.url) as client:
        client.post(CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True})
        assert wait_until(lambda: len(recorder.outcomes) == 1)
    (outcome,) = recorder.outcomes
    assert (outcome.outcome, outcome.status, outcome.stream) == ("success", 200, True)
    assert outcome.prompt_tokens > 0 and outcome.completion_tokens > 0


def test_client_disconnect_is_recorded_once_as_client_disconnected(fake_upstream: FakeUpstream) -> None:
    recorder = Recorder()
    fake_upstream.push(Reply(chunks=50, chunk_delay=0.05, content=" ".join(["word"] * 50)))
    settings = upstream_settings(fake_upstream.url)  # type: ignore[attr-defined]
    with running_gateway(settings, sinks=[recorder]) as server, httpx.Client(base_url=server.url) as client:
        with client.stream("POST", CHAT, json={"model": AUTO, "messages": MESSAGES, "stream": True}) as response:
            next(response.iter_lines())
        assert wait_until(lambda: fake_upstream.received[-1].disconnected)
        assert wait_until(lambda: len(recorder.outcomes) >= 1)
    assert [(o.outcome, o.status) for o in recorder.outcomes] == [("client_disconnected", 499)]
