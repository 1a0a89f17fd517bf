"""A keep-alive HTTP/1.1 client for one upstream origin: asyncio transports and httptools' response parser.

It replaces aiohttp's ``ClientSession`` on the upstream call, where aiohttp's generality (cookies, redirects,
proxies, tracing, multipart, multidict headers) cost about 150 µs of the gateway's CPU per request out of 370
(``bench/RESULTS.md``, "The upstream client"). What it does: POST a body, read the status and headers, then
the body whole (bounded) or piece by piece (a stream, with flow control); pooled connections up to a limit,
reused while the server keeps them alive and for at most ``keepalive_s`` idle; TLS with the system's trust
store; gzip and deflate answers decoded. Timeouts: ``pool`` (waiting for a connection), ``connect``, ``write``
(the request not handed to the kernel in full within it), ``read`` (no byte from the server for that long
while the reader waits) and an optional deadline for the whole exchange. Failures raise :class:`HTTPError`
with a ``kind``: ``connect``, ``read`` (the connection broke), ``protocol`` (the server's bytes are not
HTTP), or :class:`HTTPTimeout`.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit

import httptools

ErrorKind = Literal["connect", "read", "protocol"]

# A body's unread bytes beyond this pause reading from the socket until the reader takes them.
HIGH_WATER = 256 * 1024


class HTTPError(Exception):
    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class BodyTooLargeError(HTTPError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"an answer larger than {limit} bytes", "protocol")
        self.limit = limit


class HTTPTimeout(TimeoutError):
    """``phase`` says which bound ran out: ``pool``, ``connect``, ``write``, ``read`` or ``deadline``."""

    def __init__(self, phase: str) -> None:
        super().__init__(f"{phase} timeout")
        self.phase = phase


@dataclass(frozen=True, slots=True)
class Limits:
    connect: float
    read: float
    pool: float
    max_connections: int
    write: float = 30.0
    keepalive_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: ``http(s)://host[:port]`` and the base path prefixed to every request path."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _check_header(name: str, value: str) -> None:
    if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
        raise HTTPError(f"header {name!r} cannot be sent: it holds a line break, NUL or colon", "protocol")


def header_block(headers: dict[str, str]) -> bytes:
    """``name: value\\r\\n`` lines, each checked for line breaks (no header injection)."""
    for name, value in headers.items():
        _check_header(name, value)
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One socket and the exchange in flight on it; the reader waits on ``_progress`` for the parser's news."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.lost = False
        self.in_flight = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.received = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.last_data = 0.0
        self._progress: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_s = 0.0
        self._deadline: float | None = None
        self._written_by: float | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:  # bytes nobody asked for, on an idle connection: not to be trusted again
            self.lost = True
            self.close()
            return
        self.last_data = self.loop.time()
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError(f"the server's answer is not valid HTTP: {exc}", "protocol"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.headers_done and not self.complete and self._ends_at_close():
            self.complete = True  # a body delimited by the connection's end (no length, not chunked)
            self._wake()
        elif not self.complete:
            self._fail(HTTPError("the server closed the connection before answering in full", "read"))
        self._cancel_timer()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers = {}
            return
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return
        self.complete = True
        self.in_flight = False
        self.keep_alive = self.parser.should_keep_alive()  # only valid inside the parser's callbacks
        self._cancel_timer()
        self._wake()

    # the reader's side
    def _ends_at_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _wake(self) -> None:
        waiter = self._progress
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def start(self, request: bytes, limits: Limits, deadline: float | None) -> None:
        """Send one request; the timer runs until the answer is complete or the exchange is dropped."""
        self._reset()
        self.in_flight = True
        self._read_s = limits.read
        self._deadline = deadline
        self.last_data = now = self.loop.time()
        assert self.transport is not None
        self.transport.write(request)
        if self.transport.get_write_buffer_size():  # the kernel did not take it all: the server is slow to read
            self._written_by = now + limits.write
        self._arm(now)

    def _arm(self, now: float) -> None:
        at = max(self.last_data, now - self._read_s / 2) + self._read_s  # never sooner than half a period
        for bound in (self._deadline, self._written_by):
            if bound is not None and bound < at:
                at = bound
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        """The deadline ends the exchange, and so does a request not fully written within ``write``; the read
        bound only while the reader waits for the server (a reader busy elsewhere, or a full buffer, is not
        the server's silence)."""
        self._timer = None
        if self.complete or self.error is not None:
            return
        now = self.loop.time()
        if self._written_by is not None and self.transport is not None and not self.transport.get_write_buffer_size():
            self._written_by = None
        if self._deadline is not None and now >= self._deadline:
            self._fail(HTTPTimeout("deadline"))
        elif self._written_by is not None and now >= self._written_by:
            self._fail(HTTPTimeout("write"))
        elif self._progress is not None and now - self.last_data >= self._read_s:
            self._fail(HTTPTimeout("read"))
        else:
            self._arm(now)

    async def progress(self) -> None:
        """Until the parser has news (headers, a body piece, the end) or the exchange failed."""
        if self.error is not None:
            raise self.error
        self._progress = self.loop.create_future()
        try:
            await self._progress
        finally:
            self._progress = None
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        piece = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return piece

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.lost and self.error is None

    def close(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer whose status and headers are in; read the body with :meth:`read` or :meth:`pieces`, then
    :meth:`release` (also safe mid-body: the connection is closed instead of reused)."""

    def __init__(self, pool: Pool, connection: _Connection) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status = connection.status
        self.headers = connection.headers
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            self._decoder: zlib._Decompress | None = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
        elif encoding in ("identity", ""):
            self._decoder = None
        else:
            self.release()
            raise HTTPError(f"the server sent a body in an encoding it was not offered: {encoding!r}", "protocol")

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded); raises :class:`HTTPError` or :class:`HTTPTimeout` on failure."""
        connection = self._connection
        if connection is None:
            return
        while True:
            if connection.body:
                piece = self._decode(connection.take())
                if piece:
                    yield piece
            elif connection.complete:
                break
            else:
                await connection.progress()
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                yield tail
        self.release()

    async def read(self, limit: int, truncate: bool = False) -> bytes:
        """The whole body, at most ``limit`` bytes: beyond it, cut (``truncate``) or a ``protocol`` error.
        The connection goes back to the pool, or is closed if the body was not read to its end."""
        connection = self._connection
        try:
            if connection is not None and self._decoder is None:  # the common case: one piece at the end
                while not connection.complete and not connection.paused and connection.buffered <= limit:
                    await connection.progress()
                if connection.complete and connection.buffered <= limit:
                    return connection.take()
            chunks: list[bytes] = []
            size = 0
            async for piece in self.pieces():
                chunks.append(piece)
                size += len(piece)
                if size > limit:
                    if truncate:
                        break
                    raise BodyTooLargeError(limit)
            return b"".join(chunks)[:limit]
        finally:
            self.release()

    def _decode(self, piece: bytes) -> bytes:
        if self._decoder is None:
            return piece
        try:
            return self._decoder.decompress(piece)
        except zlib.error as exc:
            raise HTTPError(f"the server's compressed body is corrupt: {exc}", "protocol") from None

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.put_back(connection)


class Pool:
    """Connections to one origin, at most ``limits.max_connections`` open; most recently used first."""

    def __init__(self, origin: Origin, limits: Limits) -> None:
        self.origin = origin
        self.limits = limits
        self._ssl = ssl.create_default_context() if origin.scheme == "https" else None
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False
        self._head = f" HTTP/1.1\r\nhost: {origin.host_header}\r\n".encode("latin-1")

    def request_bytes(self, method: str, path: str, headers: bytes, body: bytes) -> bytes:
        """A request's bytes: ``headers`` from :func:`header_block`; the path is appended to the base path."""
        target = (self.origin.base_path + path).encode("latin-1")
        length = b"content-length: %d\r\n\r\n" % len(body)
        return b"".join((method.encode("ascii"), b" ", target, self._head, headers, length, body))

    async def send(self, request: bytes, deadline: float | None = None) -> Response:
        """Send ``request`` (see :meth:`request_bytes`) and return once the status and headers are in.

        A kept-alive connection that turns out closed before a byte of the answer arrived (the server ended it
        while idle, a race no client can rule out) is replaced once: the request never reached a live peer.
        """
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            try:
                connection.start(request, self.limits, deadline)
                while not connection.headers_done:
                    await connection.progress()
            except BaseException as exc:
                connection.close()
                self.put_back(connection)
                stale = isinstance(exc, HTTPError) and exc.kind == "read" and not connection.received
                if reused and stale and attempt == 1:
                    continue
                raise
            return Response(self, connection)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _acquire(self) -> tuple[_Connection, bool]:
        """A connection, and whether it was used before."""
        if self._closed:
            raise HTTPError("the client is closed", "connect")
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and now - connection.idle_since < self.limits.keepalive_s:
                return connection, True
            self._discard(connection)
        if self._open < self.limits.max_connections:
            self._open += 1
            return await self._connect(loop), False
        handed = await self._wait_for_slot(loop)
        return (handed, True) if handed is not None else (await self._connect(loop), False)

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """A connection handed back by another request, or None: a slot to open one in."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.limits.pool):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as this request gave up: pass it on
                if handed is not None:
                    self.put_back(handed)
                else:
                    self._free_slot()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise HTTPTimeout("pool") from None
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """Open a connection on the slot the caller holds (given back on failure)."""
        origin = self.origin
        try:
            async with asyncio.timeout(self.limits.connect):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), origin.host, origin.port, ssl=self._ssl,
                    server_hostname=origin.host if self._ssl is not None else None)
        except TimeoutError:
            self._free_slot()
            raise HTTPTimeout("connect") from None
        except (OSError, ssl.SSLError) as exc:
            self._free_slot()
            raise HTTPError(f"cannot connect to {origin.host_header}: {exc}", "connect") from exc
        except BaseException:
            self._free_slot()
            raise
        return connection

    def put_back(self, connection: _Connection) -> None:
        """A finished exchange's connection: to a waiting request, to the idle list, or closed."""
        if not connection.reusable() or self._closed:
            self._discard(connection)
            return
        connection.idle_since = connection.loop.time()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._free_slot()

    def _free_slot(self) -> None:
        """A connection is gone: a waiting request may open a new one in its place."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter, which connects
                return
        self._open -= 1

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(HTTPError("the client is closed", "connect"))
