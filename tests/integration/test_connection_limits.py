"""Connection limits before anything else runs: oversized heads, slowloris, idle sockets, too many connections."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.fault_doubles import Outcomes
from tests.support.gateway import running_gateway, upstream_settings

ERROR_KEYS = {"message", "type", "param", "code"}


@contextlib.contextmanager
def gateway_with(fake_upstream: FakeUpstream, sinks: list[Any] | None = None, **server: Any) -> Iterator[ServerThread]:
    settings = upstream_settings(fake_upstream.url, server=server)  # type: ignore[attr-defined]
    with running_gateway(settings, sinks=sinks or []) as gateway:
        yield gateway


def connect(gateway: ServerThread, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout)
    return sock


def read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything until the server closes (or ``limit`` seconds pass: then what came so far)."""
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not piece:
            break
        data += piece
    return data


def status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, orjson.loads(body)["error"]


def healthy(gateway: ServerThread) -> bool:
    return httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_header_over_64_kib_is_431_without_reading_it_all(fake_upstream: FakeUpstream) -> None:
    with gateway_with(fake_upstream) as gateway, connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
        sent = 0
        with contextlib.suppress(OSError):  # the gateway stops listening long before 8 MB
            while sent < 8 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        raw = read_all(sock)
        status, error = status_and_error(raw)
        assert status == 431
        assert set(error) == ERROR_KEYS and error["code"] == "request_header_fields_too_large"
        assert b"connection: close" in raw.lower()
        assert healthy(gateway)


def test_header_just_under_the_cap_is_served(fake_upstream: FakeUpstream) -> None:
    with gateway_with(fake_upstream, max_header_bytes=96 * 1024) as gateway:
        response = httpx.get(gateway.url + "/healthz", headers={"x-big": "a" * 70_000}, timeout=5)
    assert response.status_code == 200


def test_slowloris_headers_get_408_and_the_connection_is_closed(fake_upstream: FakeUpstream) -> None:
    with gateway_with(fake_upstream, header_timeout_s=0.5) as gateway, connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        answer = b""
        for index in range(50):  # one header line every 0.1 s, for at most 5 s
            try:
                sock.sendall(b"x-drip-%d: 1\r\n" % index)
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            break
        answer += read_all(sock, 2)
        assert time.monotonic() - started < 4, "the dripping client was not cut off"
        status, error = status_and_error(answer)
        assert status == 408 and error["code"] == "request_timeout"
        assert healthy(gateway)


def test_idle_connection_is_closed_after_the_header_deadline(fake_upstream: FakeUpstream) -> None:
    with gateway_with(fake_upstream, header_timeout_s=0.3) as gateway, connect(gateway) as sock:
        started = time.monotonic()
        assert read_all(sock, 5) == b""  # closed without an answer: it never asked anything
        assert time.monotonic() - started < 4


def test_slow_body_gets_408_and_is_recorded_as_a_client_disconnect(fake_upstream: FakeUpstream) -> None:
    outcomes = Outcomes()
    with gateway_with(fake_upstream, sinks=[outcomes], body_timeout_s=0.5) as gateway, connect(gateway) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\"")
        status, error = status_and_error(read_all(sock, 5))
        deadline = time.monotonic() + 3
        while not outcomes.items and time.monotonic() < deadline:
            time.sleep(0.01)
    assert status == 408 and set(error) == ERROR_KEYS
    assert [(o.status, o.outcome) for o in outcomes.items] == [(499, "client_disconnected")]
    assert not fake_upstream.received


def test_connections_over_the_cap_are_shed_with_503_and_healthz_recovers(fake_upstream: FakeUpstream) -> None:
    cap = 20
    with gateway_with(fake_upstream, max_connections=cap, header_timeout_s=2.0) as gateway:
        sockets = []
        try:
            for _ in range(300):  # a bounded attempt at running the gateway out of descriptors
                sockets.append(connect(gateway))
            shed = 0
            for sock in sockets[cap:]:
                raw = read_all(sock, 2)
                if raw:
                    status, error = status_and_error(raw)
                    assert status == 503 and error["code"] == "too_many_connections"
                    shed += 1
            assert shed == len(sockets) - cap
            # The gateway holds at most ``cap`` of them open (the shed ones linger about a second at most).
            deadline = time.monotonic() + 3
            connections = gateway.server.server_state.connections
            while len(connections) > cap and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(connections) <= cap
        finally:
            for sock in sockets:
                sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if healthy(gateway):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        assert healthy(gateway)


def test_idle_kept_alive_connection_is_closed_after_keep_alive_s(fake_upstream: FakeUpstream) -> None:
    with gateway_with(fake_upstream, keep_alive_s=1) as gateway, connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(65536)
        started = time.monotonic()
        rest = read_all(sock, 5)
        assert first.startswith(b"HTTP/1.1 200") and rest == b""
        assert time.monotonic() - started < 3
