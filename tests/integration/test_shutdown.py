"""Graceful shutdown: stop accepting, let in-flight streams finish within the grace period, then close backends."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from gateway.app import create_app
from gateway.tools.fake_upstream import ServerThread
from tests.support.doubles import FixedRouter
from tests.support.fault_doubles import LocalDouble, Outcomes
from tests.support.gateway import upstream_settings

CHAT = "/v1/chat/completions"
STREAM = {"model": "tiergate-auto", "stream": True, "messages": [{"role": "user", "content": "hello"}]}


def start_stream(url: str, into: dict[str, Any], first_byte: threading.Event) -> threading.Thread:
    def run() -> None:
        text = ""
        try:
            with httpx.stream("POST", url + CHAT, json=STREAM, timeout=10) as response:
                into["status"] = response.status_code
                for piece in response.iter_text():
                    text += piece
                    first_byte.set()
        except httpx.HTTPError as exc:
            into["error"] = exc
        into["text"] = text
        first_byte.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def gateway(grace: float, local: LocalDouble, outcomes: Outcomes) -> ServerThread:
    settings = upstream_settings("http://127.0.0.1:9", server={"shutdown_grace_s": grace})
    app = create_app(settings, router=FixedRouter(0.1), backends={"small": local, "large": LocalDouble("l")},
                     sinks=[outcomes])
    server = ServerThread(app, timeout_graceful_shutdown=grace)
    server.app = app  # type: ignore[attr-defined]
    return server


def test_in_flight_stream_finishes_before_backends_close() -> None:
    local = LocalDouble(chunk_delay=0.15, chunks=8)
    outcomes = Outcomes()
    server = gateway(5.0, local, outcomes)
    result: dict[str, Any] = {}
    first_byte = threading.Event()
    with server:
        client = start_stream(server.url, result, first_byte)
        assert first_byte.wait(5)
        server.server.should_exit = True
        time.sleep(0.3)
        refused = False
        try:
            httpx.post(server.url + CHAT, json=STREAM, timeout=2)
        except httpx.ConnectError:
            refused = True
        assert refused, "a new connection must be refused while draining"
        assert not local.closed, "backends stay open while a stream is in flight"
        client.join(10)
    assert result["status"] == 200 and result["text"].endswith("data: [DONE]\n\n")
    assert local.closed and local.closed_at_calls_done == 1  # closed only after the stream was done
    assert [o.outcome for o in outcomes.items] == ["success"]


def test_stream_past_the_grace_period_is_cut_and_accounted_once() -> None:
    local = LocalDouble(chunk_delay=0.3, chunks=30)
    outcomes = Outcomes()
    server = gateway(0.5, local, outcomes)
    result: dict[str, Any] = {}
    first_byte = threading.Event()
    started = time.monotonic()
    with server:
        client = start_stream(server.url, result, first_byte)
        assert first_byte.wait(5)
        server.server.should_exit = True
        client.join(10)
    assert time.monotonic() - started < 6
    assert "data: [DONE]" not in result.get("text", "")
    assert local.closed
    assert len(outcomes.items) == 1 and outcomes.items[0].status == 499


def test_draining_gateway_refuses_new_requests_and_reports_not_ready() -> None:
    outcomes = Outcomes()
    server = gateway(1.0, LocalDouble(), outcomes)
    with server:
        server.app.state.gateway.guard.draining = True  # type: ignore[attr-defined]
        refused = httpx.post(server.url + CHAT, json=STREAM, timeout=5)
        ready = httpx.get(server.url + "/readyz", timeout=5)
    assert refused.status_code == 503 and refused.headers["connection"] == "close"
    assert refused.json()["error"]["code"] == "shutting_down"
    assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False
