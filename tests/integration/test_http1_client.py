"""The upstream HTTP/1.1 client against loopback servers that answer byte for byte as each test needs."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.backends.http1 import (
    HIGH_WATER,
    BodyTooLargeError,
    HTTPError,
    HTTPTimeout,
    Limits,
    Origin,
    Pool,
    header_block,
)

# handler(reader, writer, request body) answers one request; returning False closes the connection.
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]
LIMITS = Limits(connect=2, read=2, pool=2, max_connections=4)
HEADERS = header_block({"content-type": "application/json"})


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.answer(reader, writer, body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(answer)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


@asynccontextmanager
async def pool_for(server: Server, limits: Limits = LIMITS, scheme: str = "http") -> AsyncIterator[Pool]:
    pool = Pool(Origin.parse(f"{scheme}://localhost:{server.port}/v1"), limits)
    try:
        yield pool
    finally:
        await pool.aclose()


async def post(pool: Pool, body: bytes = b"{}", deadline: float | None = None, limit: int = 1 << 20) -> bytes:
    response = await pool.send(pool.request_bytes("POST", "/chat/completions", HEADERS, body), deadline)
    return await response.read(limit)


def answer_with(head: bytes, body: bytes = b"", keep_alive: bool = True) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(head + body)
        await writer.drain()
        return keep_alive

    return answer


def ok(body: bytes, extra: bytes = b"") -> Answer:
    return answer_with(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra), body)


async def test_connections_are_kept_alive_and_reused() -> None:
    async with serving(ok(b'{"a":1}')) as server, pool_for(server) as pool:
        assert [await post(pool) for _ in range(3)] == [b'{"a":1}'] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:%d\r\n" % server.port)
    assert b"content-length: 2\r\n\r\n{}" in first


async def test_an_answer_that_closes_the_connection_is_not_reused() -> None:
    answer = answer_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n", b"ok", False)
    async with serving(answer) as server, pool_for(server) as pool:
        assert [await post(pool) for _ in range(2)] == [b"ok", b"ok"]
    assert server.connections == 2


async def test_a_body_delimited_by_the_connection_end_is_read_whole() -> None:
    answer = answer_with(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n", b"until the end", False)
    async with serving(answer) as server, pool_for(server) as pool:
        assert await post(pool) == b"until the end"


async def test_chunked_pieces_arrive_as_sent() -> None:
    release = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with serving(chunked) as server, pool_for(server) as pool:
        response = await pool.send(pool.request_bytes("POST", "/x", HEADERS, b"{}"))
        pieces = aiter(response.pieces())
        assert await anext(pieces) == b"first"  # before the rest was even sent
        release.set()
        assert [piece async for piece in pieces] == [b"second"]
        assert await post(pool) is not None  # the connection went back to the pool in one piece
    assert server.connections == 1


async def test_gzip_answers_are_decoded_and_unknown_encodings_refused() -> None:
    packed = gzip.compress(b'{"ok":true}')
    async with serving(ok(packed, b"content-encoding: gzip\r\n")) as server, pool_for(server) as pool:
        assert await post(pool) == b'{"ok":true}'
    async with serving(ok(b"xx", b"content-encoding: br\r\n")) as server, pool_for(server) as pool:
        with pytest.raises(HTTPError) as caught:
            await post(pool)
    assert caught.value.kind == "protocol"


async def test_a_body_over_the_limit_is_refused_or_cut() -> None:
    async with serving(ok(b"x" * 5000)) as server, pool_for(server) as pool:
        with pytest.raises(BodyTooLargeError):
            await post(pool, limit=1000)
        response = await pool.send(pool.request_bytes("POST", "/x", HEADERS, b"{}"))
        assert await response.read(1000, truncate=True) == b"x" * 1000
    assert server.connections == 1  # each body had arrived whole: the connection stayed usable
    async with serving(ok(b"x" * 4 * HIGH_WATER)) as server, pool_for(server) as pool:
        with pytest.raises(BodyTooLargeError):
            await post(pool, limit=1000)
        assert await post(pool, limit=4 * HIGH_WATER) == b"x" * 4 * HIGH_WATER
    assert server.connections == 2  # a body left unread closes its connection


async def test_garbage_is_a_protocol_error_and_an_early_hang_up_a_read_error() -> None:
    async with serving(answer_with(b"\x16\x03\x01 not HTTP\r\n\r\n")) as server, pool_for(server) as pool:
        with pytest.raises(HTTPError) as garbage:
            await post(pool)
    assert garbage.value.kind == "protocol"
    async with serving(answer_with(b"", keep_alive=False)) as server, pool_for(server) as pool:
        with pytest.raises(HTTPError) as hang_up:
            await post(pool)
    assert hang_up.value.kind == "read"


async def test_refused_connection_is_a_connect_error() -> None:
    async with serving(ok(b"")) as server:
        port = server.port
    pool = Pool(Origin.parse(f"http://127.0.0.1:{port}"), LIMITS)
    with pytest.raises(HTTPError) as caught:
        await post(pool)
    assert caught.value.kind == "connect"
    await pool.aclose()


async def test_silence_past_the_read_timeout_and_a_drip_past_the_deadline_time_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
        await asyncio.sleep(5)
        return False

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(1000):
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.05)
        return False

    limits = Limits(connect=1, read=0.3, pool=1, max_connections=2)
    loop = asyncio.get_running_loop()
    async with serving(silent) as server, pool_for(server, limits) as pool:
        started = loop.time()
        with pytest.raises(HTTPTimeout) as read:
            await post(pool)
        assert read.value.phase == "read" and loop.time() - started < 2
    async with serving(drip) as server, pool_for(server, limits) as pool:
        started = loop.time()
        with pytest.raises(HTTPTimeout) as deadline:
            await post(pool, deadline=started + 0.8)  # each byte within the read timeout, the whole not
        assert deadline.value.phase == "deadline" and loop.time() - started < 2


async def test_a_server_that_stops_reading_is_a_write_timeout() -> None:
    done = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accepts, never reads: the request cannot be sent
        writer.close()
        await writer.wait_closed()

    listener = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = Pool(Origin.parse(f"http://127.0.0.1:{port}"), Limits(connect=1, read=5, pool=1, max_connections=1,
                                                                  write=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(HTTPTimeout) as caught:
            await post(pool, b"x" * (64 << 20))  # more than any socket buffer holds
    finally:
        await pool.aclose()
        done.set()
        listener.close()
        await listener.wait_closed()
    assert caught.value.phase == "write" and loop.time() - started < 3


async def test_requests_beyond_the_connection_limit_wait_for_one_then_time_out() -> None:
    gate = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        await gate.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        return True

    limits = Limits(connect=1, read=5, pool=0.3, max_connections=1)
    async with serving(held) as server, pool_for(server, limits) as pool:
        first = asyncio.create_task(post(pool))
        second = asyncio.create_task(post(pool))
        await asyncio.sleep(0.1)
        gate.set()
        assert await asyncio.gather(first, second) == [b"ok", b"ok"]
        assert server.connections == 1  # the second took the first's connection when it came back
        gate.clear()
        blocked = asyncio.create_task(post(pool))
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPTimeout) as caught:
            await post(pool)
        assert caught.value.phase == "pool"
        gate.set()
        assert await blocked == b"ok"


async def test_a_cancelled_request_frees_its_connection_slot() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        await asyncio.sleep(10)
        return False

    limits = Limits(connect=1, read=5, pool=0.5, max_connections=1)
    async with serving(never) as server, pool_for(server, limits) as pool:
        for _ in range(3):
            task = asyncio.create_task(post(pool))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert server.connections == 3  # each try got the one slot back and opened a fresh connection


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with serving(answer_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok", False)) as server:
        async with pool_for(server) as pool:
            assert await post(pool) == b"ok"  # keep-alive by its headers, but the server hangs up after it
            await asyncio.sleep(0.05)
            assert await post(pool) == b"ok"
    assert server.connections == 2


async def test_a_kept_alive_connection_closed_as_the_request_arrives_is_replaced_once() -> None:
    answered = 0

    async def hangs_up_on_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> bool:
        nonlocal answered
        answered += 1
        if answered == 2:
            return False  # closes without a byte: the idle-close race, seen from the client
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        return True

    async with serving(hangs_up_on_the_second) as server, pool_for(server) as pool:
        assert [await post(pool) for _ in range(2)] == [b"ok", b"ok"]
    assert server.connections == 2 and answered == 3


async def test_bytes_sent_to_an_idle_connection_retire_it() -> None:
    unsolicited = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nstale"  # half an answer nobody asked for

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(unsolicited)
        return True

    async with serving(answer) as server, pool_for(server) as pool:
        assert await post(pool, b"[1]") == b"[1]"
        await asyncio.sleep(0.1)
        assert await post(pool, b"[2]") == b"[2]"
    assert server.connections == 2


async def test_a_slow_reader_pauses_the_socket() -> None:
    body = b"y" * (4 * HIGH_WATER)

    async with serving(ok(body)) as server, pool_for(server) as pool:
        response = await pool.send(pool.request_bytes("POST", "/x", HEADERS, b"{}"))
        connection = response._connection
        assert connection is not None
        await asyncio.sleep(0.2)  # the server has sent everything it could; nobody read
        assert connection.paused and connection.buffered < 2 * HIGH_WATER
        assert await response.read(len(body)) == body


def test_header_values_cannot_inject_lines() -> None:
    assert header_block({"authorization": "Bearer k"}) == b"authorization: Bearer k\r\n"
    for bad in ({"authorization": "k\r\nx-admin: 1"}, {"x": "a\nb"}, {"bad:name": "v"}):
        with pytest.raises(HTTPError):
            header_block(bad)


def test_origins_keep_their_base_path_and_default_ports() -> None:
    assert Origin.parse("https://api.openai.com/v1/") == Origin("https", "api.openai.com", 443, "/v1")
    assert Origin.parse("https://api.openai.com/v1").host_header == "api.openai.com"
    assert Origin.parse("http://[::1]:8000").host_header == "[::1]:8000"
    with pytest.raises(ValueError):
        Origin.parse("ftp://example.com")


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (needed to make a test certificate)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    return tmp_path


async def test_https_verifies_the_server_against_the_trust_store(
    certificate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    async with serving(ok(b"secure"), context) as server:
        async with pool_for(server, scheme="https") as pool:  # a self-signed certificate nobody trusts
            with pytest.raises(HTTPError) as untrusted:
                await post(pool)
        assert untrusted.value.kind == "connect"
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate / "cert.pem"))
        async with pool_for(server, scheme="https") as pool:
            assert await post(pool) == b"secure"
