"""The interface every model backend implements: complete, stream, aclose (the shape of httpx's transports)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

# A chat completion request body as the client sent it (a parsed JSON object), with ``model`` replaced.
ChatBody = dict[str, Any]
# One parsed ``chat.completion`` response, or one parsed ``chat.completion.chunk``.
ChatObject = dict[str, Any]


class Backend(Protocol):
    """A model backend serving one model for one tier.

    ``complete`` returns the parsed ``chat.completion`` object. ``stream`` yields parsed
    ``chat.completion.chunk`` objects; the backend always asks for usage so the last chunk carries it, and the
    caller decides whether the client sees that chunk. ``client_headers`` are the client's request headers
    (lower-case), for the rare backend configured to forward one; most backends ignore them. Leaving the
    ``async for`` early (client gone) must release the upstream connection or the local generation slot.
    Failures raise
    :class:`gateway.errors.GatewayError` subclasses, never transport exceptions.
    """

    name: str
    model: str

    async def start(self) -> None:
        """Open clients or load weights; called once from the app's lifespan."""
        ...

    def ready(self) -> bool: ...

    async def complete(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> ChatObject: ...

    def stream(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> AsyncIterator[ChatObject]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LoadReporter(Protocol):
    """A backend with generation slots (the in-process model): requests waiting for one, requests holding one."""

    def queue_depth(self) -> int: ...

    def in_flight(self) -> int: ...
