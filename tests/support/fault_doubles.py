"""Doubles for fault tests: an outcome collector, a scriptable local-backend stand-in, a closed port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

from gateway.accounting import RequestOutcome
from gateway.errors import GatewayError


class Outcomes:
    """An accounting sink that keeps every finished outcome."""

    def __init__(self) -> None:
        self.items: list[RequestOutcome] = []

    def record(self, outcome: RequestOutcome) -> None:
        self.items.append(outcome)


class LocalDouble:
    """Stands in for the in-process model: fails with ``error`` while it is set, else answers like one."""

    def __init__(self, model: str = "local-tiny", error: GatewayError | None = None,
                 chunk_delay: float = 0.0, chunks: int = 3) -> None:
        self.name = "local"
        self.model = model
        self.error = error
        self.chunk_delay = chunk_delay
        self.chunks = chunks
        self.calls = 0
        self.closed = False
        self.closed_at_calls_done = -1
        self.done = 0

    async def start(self) -> None:
        self.closed = False

    def ready(self) -> bool:
        return not self.closed

    def _answer(self) -> dict[str, Any]:
        return {"id": "chatcmpl-local", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "local answer"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}

    async def complete(self, body: dict[str, Any], client_headers: dict[str, str] | None = None) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.done += 1
        return self._answer()

    async def stream(self, body: dict[str, Any],
                     client_headers: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        base = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 0, "model": self.model}
        for index in range(self.chunks):
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield {**base, "choices": [{"index": 0, "delta": {"content": f"w{index} "}, "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": self.chunks,
                                                "total_tokens": 3 + self.chunks}}
        self.done += 1

    async def aclose(self) -> None:
        self.closed = True
        self.closed_at_calls_done = self.done


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
