"""Hostile actors for bench/soak.py: slow and oversized clients, abandoned streams, a garbage-speaking upstream.

Each actor runs one bounded action against the gateway on loopback and names how it ended. Actions that
reach the app (a slow body, an abandoned stream) are requests the gateway must account; the others (slow or
oversized headers, idle sockets) are refused by the connection layer before any request exists.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

GARBAGE = b"\x16\x03\x01\x00 this is not HTTP\r\n\r\n"
STEP_LIMIT_S = 15.0  # no hostile action takes longer than this


@dataclass
class HostileTally:
    results: Counter[str] = field(default_factory=Counter)
    app_requests: int = 0  # actions that reached the app: each must be accounted exactly once


async def _status(reader: asyncio.StreamReader, timeout: float) -> str:
    """The status code of the first answer, "closed" when the server closed without one, or "silent"."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        return "silent"
    except ConnectionError:
        return "reset"
    if not line:
        return "closed"
    parts = line.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else "garbled"


class Hostile:
    """Runs random hostile actions against ``port`` until told to stop."""

    def __init__(self, port: int, key: str, seed: int) -> None:
        self.port = port
        self.key = key
        self.rng = random.Random(seed)
        self.tally = HostileTally()
        self.actions: list[Callable[[], Awaitable[str]]] = [
            self.slow_headers, self.slow_body, self.oversized_header, self.idle, self.abandoned_stream]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            action = self.rng.choice(self.actions)
            try:
                result = await asyncio.wait_for(action(), STEP_LIMIT_S)
            except TimeoutError:
                result = "not_cut_off"
            except OSError as exc:
                result = f"error_{type(exc).__name__}"
            self.tally.results[f"{action.__name__}:{result}"] += 1

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def _head(self, length: int, extra: str = "") -> bytes:
        return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {self.key}\r\n"
                f"content-type: application/json\r\ncontent-length: {length}\r\n{extra}\r\n").encode()

    async def slow_headers(self) -> str:
        """Slowloris: one header line every 0.25 s; the header deadline must cut it off with a 408."""
        reader, writer = await self._open()
        try:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            for index in range(50):
                try:
                    writer.write(b"x-drip-%d: 1\r\n" % index)
                    await writer.drain()
                except ConnectionError:
                    break
                status = await _status(reader, 0.25)
                if status != "silent":
                    return status
            return await _status(reader, 1)
        finally:
            writer.transport.abort()

    async def slow_body(self) -> str:
        """Headers at once, then 10 bytes of a 1000-byte body and nothing more: cut off with a 408."""
        reader, writer = await self._open()
        self.tally.app_requests += 1
        try:
            writer.write(self._head(1000) + b'{"model": ')
            await writer.drain()
            return await _status(reader, STEP_LIMIT_S - 1)
        finally:
            writer.transport.abort()

    async def oversized_header(self) -> str:
        """A 200 KB header line: a 431 long before the gateway has read it all."""
        reader, writer = await self._open()
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
            try:
                for _ in range(50):
                    writer.write(b"a" * 4096)
                    await writer.drain()
            except ConnectionError:
                pass
            return await _status(reader, 5)
        finally:
            writer.transport.abort()

    async def idle(self) -> str:
        """Connect and say nothing: closed at the header deadline."""
        reader, writer = await self._open()
        try:
            return await _status(reader, STEP_LIMIT_S - 1)
        finally:
            writer.transport.abort()

    async def abandoned_stream(self) -> str:
        """A stream with a large prompt, abandoned at its first chunk (before the usage chunk)."""
        payload = json.dumps({"model": "tiergate-auto", "stream": True,
                              "messages": [{"role": "user", "content": "abandon " * 2000}]}).encode()
        reader, writer = await self._open()
        self.tally.app_requests += 1
        try:
            writer.write(self._head(len(payload)) + payload)
            await writer.drain()
            status = await _status(reader, 10)
            if status == "200":
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    line = await asyncio.wait_for(reader.readline(), 5)
                    if not line or b"data:" in line:
                        break
            return f"{status}_abandoned"
        finally:
            writer.transport.abort()


class GarbageProxy:
    """A TCP tunnel to the real upstream; ``rate`` of its connections get non-HTTP garbage instead."""

    def __init__(self, target_port: int, rate: float, seed: int) -> None:
        self.target_port = target_port
        self.rate = rate
        self.rng = random.Random(seed)
        self.garbage = 0
        self.tunnelled = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            if self.rng.random() < self.rate:
                self.garbage += 1
                await reader.readuntil(b"\r\n\r\n")
                writer.write(GARBAGE)
                await writer.drain()
                return
            self.tunnelled += 1
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # a cancelled handler ends quietly: the proxy is closing
        finally:
            writer.close()
            self.handlers.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        writer.close()
