"""What one chat request leaves for the learning loop: its body and, when it is shadowed, the answer text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.backends.base import ChatObject, close_iterator


class Capture:
    """Held from the routing decision until the outcome is recorded; collects the answer text cheaply."""

    __slots__ = ("body", "client_headers", "parts", "shadow")

    def __init__(self, body: dict[str, Any], client_headers: dict[str, str], shadow: bool) -> None:
        self.body = body
        self.client_headers = client_headers
        self.shadow = shadow
        self.parts: list[str] | None = None  # None: no answer text seen (an error, or tool calls only)

    def answer(self, answer: ChatObject) -> None:
        """A JSON answer."""
        if not self.shadow:
            return
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return
        if isinstance(content, str):
            self.parts = [content]

    def chunk(self, chunk: ChatObject) -> None:
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            if self.parts is None:
                self.parts = []
            self.parts.append(content)

    def follow(self, first: ChatObject, chunks: AsyncIterator[ChatObject]) -> AsyncIterator[ChatObject]:
        """A streamed answer: the same chunks, their text collected on the way (only when shadowed)."""
        if not self.shadow:
            return chunks
        self.chunk(first)
        return _Followed(self, chunks)

    def text(self) -> str | None:
        return None if self.parts is None else "".join(self.parts)


class _Followed:
    """Passes chunks through unchanged; closing it closes the upstream stream (the api relies on aclose)."""

    __slots__ = ("capture", "chunks")

    def __init__(self, capture: Capture, chunks: AsyncIterator[ChatObject]) -> None:
        self.capture = capture
        self.chunks = chunks

    def __aiter__(self) -> _Followed:
        return self

    async def __anext__(self) -> ChatObject:
        chunk = await anext(self.chunks)
        self.capture.chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        await close_iterator(self.chunks)
