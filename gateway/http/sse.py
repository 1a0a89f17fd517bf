"""Server-sent events: encoding chunks, and a response that stops its stream the moment the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.backends.base import close_iterator
from gateway.errors import GatewayError

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_events(error: GatewayError) -> bytes:
    """After a 200 has gone out, errors travel in-band: an error event, then ``[DONE]``."""
    return event(error.body()) + DONE


class SSEResponse(Response):
    """Streams ``events`` as ``text/event-stream``.

    A watcher task waits for ``http.disconnect``; when the client leaves, the streaming task is cancelled,
    so the event generator's ``finally`` runs at once (closing the upstream response or freeing the local
    model's slot) instead of at the next chunk. Plain asyncio cancellation is used on purpose: clean-up
    code may still await after it.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        # Not Response.__init__: it would render an empty body and declare content-length 0.
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((streaming, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, watcher):
                task.cancel()
            # Let the generator's clean-up run to the end before the request is over.
            await asyncio.gather(streaming, watcher, return_exceptions=True)
            await close_iterator(self.events)

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:  # the client went away while we were sending
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
