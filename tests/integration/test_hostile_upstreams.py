"""Broken upstreams: non-HTTP garbage, huge or unterminated answers, early hang-ups, byte drips."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.fault_doubles import Outcomes
from tests.support.gateway import running_gateway, upstream_settings
from tests.support.raw_upstream import RawUpstream, good_answer

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**BODY, "stream": True}
ERROR_KEYS = {"message", "type", "param", "code"}
ONE_TRY = {"retry": {"attempts": 1}, "fallback": {"failures": []}}


def settings_for(url: str, resilience: dict[str, Any] | None = None, **timeout: float) -> Any:
    small = {"timeout": {"connect": 2, "read": 2, "write": 2, "pool": 2, **timeout}}
    return upstream_settings(url, resilience=resilience or ONE_TRY, tier_overrides={"small": small})


def wait_for(outcomes: Outcomes, count: int) -> None:
    deadline = time.monotonic() + 3
    while len(outcomes.items) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_garbage_upstream_is_502_protocol_and_counts_against_the_breaker() -> None:
    async def garbage(index: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
        await writer.drain()

    outcomes = Outcomes()
    resilience = {**ONE_TRY, "breaker": {"failure_threshold": 2, "reset_after_s": 60}}
    with RawUpstream(garbage) as upstream, running_gateway(settings_for(upstream.url, resilience),
                                                           sinks=[outcomes]) as gateway:
        answers = [httpx.post(gateway.url + CHAT, json=body, timeout=10) for body in (BODY, STREAM, BODY)]
        wait_for(outcomes, 3)
        connections = upstream.connections
    assert [a.status_code for a in answers] == [502, 502, 503]  # the third finds the circuit open
    for answer in answers:
        assert set(answer.json()["error"]) == ERROR_KEYS
    assert [(o.outcome, o.error_kind) for o in outcomes.items[:2]] == [("upstream_error", "protocol")] * 2
    assert connections == 2


def test_stream_request_answered_with_a_20_mb_json_body_is_rejected_at_once() -> None:
    async def json_flood(index: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        size = 20 * 1024 * 1024
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % size)
        block = b'{"x":"' + b"a" * 65530
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()

    with RawUpstream(json_flood) as upstream, running_gateway(settings_for(upstream.url)) as gateway:
        started = time.monotonic()
        answer = httpx.post(gateway.url + CHAT, json=STREAM, timeout=30)
        elapsed = time.monotonic() - started
        health = httpx.get(gateway.url + "/healthz", timeout=5)
    assert answer.status_code == 502
    assert "text/event-stream" in answer.json()["error"]["message"]
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert health.status_code == 200


def test_unterminated_30_mb_event_is_cut_at_the_event_cap() -> None:
    async def endless_event(index: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: ")
        for _ in range(30 * 16):
            writer.write(b"b" * 65536)
            await writer.drain()

    settings = settings_for("http://127.0.0.1:9")
    settings.tiers["small"] = settings.tiers["small"].model_copy(update={"max_event_bytes": 1024 * 1024})
    with RawUpstream(endless_event) as upstream:
        settings.tiers["small"] = settings.tiers["small"].model_copy(update={"base_url": upstream.url + "/v1"})
        with running_gateway(settings) as gateway:
            started = time.monotonic()
            answer = httpx.post(gateway.url + CHAT, json=STREAM, timeout=30)
            elapsed = time.monotonic() - started
    assert answer.status_code == 502
    assert "larger than" in answer.json()["error"]["message"]
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_json_answer_past_the_size_cap_is_502(fake_upstream: FakeUpstream) -> None:
    settings = upstream_settings(fake_upstream.url, resilience=ONE_TRY,  # type: ignore[attr-defined]
                                 tier_overrides={"small": {"max_response_bytes": 4096}})
    fake_upstream.push(Reply(content="word " * 2000))
    with running_gateway(settings) as gateway:
        answer = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
        fine = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
    assert answer.status_code == 502 and "larger than 4096 bytes" in answer.json()["error"]["message"]
    assert fine.status_code == 200


def test_upstream_closing_before_answering_is_retried_not_a_timeout() -> None:
    async def close_first(index: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        if index > 0:
            writer.write(good_answer(body))
            await writer.drain()
        # the first connection is closed without a word: the keep-alive race with an upstream's idle timeout

    retry = {"retry": {"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02}, "fallback": {"failures": []}}
    with RawUpstream(close_first) as upstream, running_gateway(settings_for(upstream.url, retry)) as gateway:
        answer = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
        connections = upstream.connections
    assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
    assert connections == 2


def test_upstream_closing_before_answering_without_retries_is_502_read() -> None:
    async def close(index: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        return None

    outcomes = Outcomes()
    with RawUpstream(close) as upstream, running_gateway(settings_for(upstream.url), sinks=[outcomes]) as gateway:
        answer = httpx.post(gateway.url + CHAT, json=BODY, timeout=10)
        wait_for(outcomes, 1)
    assert answer.status_code == 502 and answer.json()["error"]["type"] == "upstream_error"
    assert outcomes.items[0].error_kind == "read"


def test_byte_dripping_upstream_is_cut_off_by_the_total_timeout() -> None:
    async def drip(index: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        payload = orjson.dumps({"id": "x", "object": "chat.completion", "choices": []})
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload))
        for byte in payload:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)  # each byte well inside the read timeout

    with RawUpstream(drip) as upstream, running_gateway(settings_for(upstream.url, total=1.0)) as gateway:
        started = time.monotonic()
        answer = httpx.post(gateway.url + CHAT, json=BODY, timeout=30)
        elapsed = time.monotonic() - started
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "upstream_timeout"
    assert elapsed < 4, f"took {elapsed:.1f} s"


def test_stream_total_ends_a_slow_stream_in_band(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(chunks=30, chunk_delay=0.1, content=" ".join(["w"] * 30)))
    settings = settings_for(fake_upstream.url, stream_total=0.5)  # type: ignore[attr-defined]
    with running_gateway(settings) as gateway:
        started = time.monotonic()
        answer = httpx.post(gateway.url + CHAT, json=STREAM, timeout=30)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200
    data = [line[6:] for line in answer.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and orjson.loads(data[-2])["error"]["type"] == "upstream_timeout"
    assert elapsed < 2.5


class BrokenContract:
    """A backend that fails with a plain exception instead of a GatewayError."""

    name = "broken"
    model = "gpt-4o-mini"

    async def start(self) -> None: ...

    def ready(self) -> bool:
        return True

    async def complete(self, body: dict[str, Any], client_headers: dict[str, str] | None = None) -> dict[str, Any]:
        raise ValueError("not a gateway error")

    async def stream(self, body: dict[str, Any], client_headers: dict[str, str] | None = None) -> Any:
        raise ValueError("not a gateway error")
        yield {}  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None: ...


def test_backend_failing_outside_the_error_tree_is_a_502_protocol_breaker_failure() -> None:
    outcomes = Outcomes()
    broken = BrokenContract()
    resilience = {**ONE_TRY, "breaker": {"failure_threshold": 2, "reset_after_s": 60}}
    with running_gateway(settings_for("http://127.0.0.1:9", resilience), sinks=[outcomes],
                         backends={"small": broken, "large": broken}) as gateway:
        answers = [httpx.post(gateway.url + CHAT, json=body, timeout=10) for body in (BODY, STREAM, BODY)]
        wait_for(outcomes, 3)
    assert [a.status_code for a in answers] == [502, 502, 503]
    assert [(o.outcome, o.error_kind) for o in outcomes.items[:2]] == [("upstream_error", "protocol")] * 2
