"""Connection limits in front of the app: header size, header and body deadlines, a cap on open connections.

uvicorn's httptools protocol has none of these: a client could hold a connection forever by dripping its
headers, buffer a header line of any size (httptools joins the pieces, so also quadratic CPU), or open
connections until the process runs out of descriptors. This protocol subclass counts header bytes before
the parser sees them, keeps one timer per connection for the phase it is in (headers, then body; uvicorn's
own keep-alive timer covers the idle time between requests), and answers over-cap connections with a 503
as soon as they are accepted. Rejections are OpenAI-shaped JSON with ``connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import ServerSettings

log = logging.getLogger("tiergate.connections")

HEADER_END = b"\r\n\r\n"
# After a rejection the connection is half-closed and what the client still sends is read and dropped for
# this long: closing a socket with unread input makes the kernel send a reset, which can reach the client
# before the answer does.
LINGER_S = 1.0
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}
# Descriptors kept free for everything that is not a client connection (upstream pools, files, the listener).
FD_RESERVE = 64


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(server.max_connections, server.max_header_bytes, server.header_timeout_s, server.body_timeout_s)


def fd_connection_budget() -> int | None:
    """Client connections the descriptor limit allows (each may hold an upstream connection too)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(16, (soft - FD_RESERVE) // 2)


def raw_error(status: int, message: str, code: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response, written straight to the socket."""
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error" if status < 500
                                   else "server_error", "param": None, "code": code}})
    head = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")), b"content-type: application/json",
            b"content-length: %d" % len(body), b"connection: close"]
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + HEADER_END + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits`; built by :func:`limited_protocol`."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received towards the current request's head
        self._in_head = True  # waiting for (the rest of) a request line and headers
        # One lazily moved timer: a phase change only sets the deadline, so a kept-alive connection serving
        # many requests does not create and cancel two timers per request.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline: float | None = None  # loop time by which the current phase must end; None = no phase
        self._expire: Callable[[], None] = _nothing
        self._rejected = False

    # -- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("connection limit (%d) reached: shedding a new connection", self.limits.max_connections)
            # Lingering (to let the 503 arrive) is itself bounded: under a flood, close at once.
            linger = len(self.connections) <= 2 * self.limits.max_connections
            self._reject(503, "the gateway has too many open connections; retry shortly", "too_many_connections",
                         retry_after=1, linger=linger)
            return
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # lingering after a rejection: drop what the client still sends
        if self._in_head:
            seen = self._head_bytes
            self._head_bytes = seen + len(data)
            cap = self.limits.max_header_bytes
            # The head must end within the cap; what follows its end in this piece is body.
            if self._head_bytes > cap and data.find(HEADER_END, 0, max(0, cap - seen) + len(HEADER_END)) < 0:
                self._reject(431, f"request headers exceed {cap} bytes", "request_header_fields_too_large")
                return
        super().data_received(data)

    # -- parser callbacks (called synchronously from data_received)
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:  # a later request on a kept-alive connection: its head has a deadline too
            self._arm(self.limits.header_timeout_s, self._header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._arm(self.limits.body_timeout_s, self._body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    # -- deadlines
    def _arm(self, delay: float, expire: Callable[[], None]) -> None:
        deadline = self.loop.time() + delay
        self._deadline = deadline
        self._expire = expire
        if self._timer is not None and self._timer_at <= deadline:
            return  # it fires first and moves itself on to the deadline
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() < deadline:
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._check)
            return
        self._deadline = None
        self._expire()

    def _responding(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def _header_timeout(self) -> None:
        if self.transport.is_closing():
            return
        if self._responding():  # the head of a pipelined request: judged once the current response is done
            self._arm(self.limits.header_timeout_s, self._header_timeout)
            return
        if self._head_bytes == 0:
            self.transport.close()  # idle since connecting: nothing to answer
            return
        self._reject(408, f"request headers not received within {self.limits.header_timeout_s:g} s",
                     "request_timeout")

    def _body_timeout(self) -> None:
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is None or cycle.response_started:
            self.transport.close()
            return
        # The app is waiting in receive(): it sees a disconnect (recorded as 499) and its answer is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self._reject(408, f"request body not received within {self.limits.body_timeout_s:g} s", "request_timeout")

    def _reject(self, status: int, message: str, code: str, retry_after: int | None = None,
                linger: bool = True) -> None:
        self._rejected = True
        self._disarm()
        transport = self.transport
        transport.write(raw_error(status, message, code, retry_after))
        if linger and transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
            self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()


def _nothing() -> None:
    return None


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class bound to ``limits`` (uvicorn builds one protocol per connection from a class)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


class WorkerLimitedProtocol(LimitedHttpToolsProtocol):
    """The protocol of ``serve --workers``: uvicorn's worker processes import it by name (a class made at run
    time does not cross the process boundary), and each worker binds its limits with ``bind_worker_limits``."""


def effective_limits(server: ServerSettings) -> ConnectionLimits:
    """The configured limits, with max_connections lowered to what the descriptor limit allows."""
    limits = ConnectionLimits.from_settings(server)
    budget = fd_connection_budget()
    if budget is not None and budget < limits.max_connections:
        log.warning("server.max_connections %d lowered to %d: the descriptor limit (ulimit -n) allows no more",
                    limits.max_connections, budget)
        limits = ConnectionLimits(budget, limits.max_header_bytes, limits.header_timeout_s, limits.body_timeout_s)
    return limits


def bind_worker_limits(server: ServerSettings) -> None:
    """Called once in each worker process, before it serves, with the settings that worker read."""
    WorkerLimitedProtocol.limits = effective_limits(server)


def server_options(server: ServerSettings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments that put the connection limits in front of the app."""
    return {"http": limited_protocol(effective_limits(server)), "timeout_keep_alive": server.keep_alive_s}


def worker_server_options(server: ServerSettings) -> dict[str, Any]:
    """The same for ``serve --workers``: the protocol by import path, bound in each worker."""
    path = f"{WorkerLimitedProtocol.__module__}:{WorkerLimitedProtocol.__qualname__}"
    return {"http": path, "timeout_keep_alive": server.keep_alive_s}
