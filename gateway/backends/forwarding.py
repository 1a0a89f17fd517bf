"""The optional backend capability of forwarding any OpenAI endpoint's body as sent (Responses, embeddings)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Forwarding(Protocol):
    """A backend that can POST a body to another path of its upstream (gateway.backends.openai_http)."""

    async def post_json(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                        model: str | None = None) -> dict[str, Any]: ...

    def post_stream(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                    model: str | None = None) -> AsyncIterator[dict[str, Any]]: ...
