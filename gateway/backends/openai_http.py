"""Backend for any OpenAI-compatible HTTP server: one pool of keep-alive connections per backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.backends.base import ChatBody, ChatObject
from gateway.backends.http1 import (
    BodyTooLargeError,
    HTTPError,
    HTTPTimeout,
    Limits,
    Origin,
    Pool,
    Response,
    header_block,
)
from gateway.errors import UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from gateway.http.sse_decoder import EventTooLargeError, SSEDecoder, is_event_stream
from gateway.settings import OpenAIBackend

# Forwarded from the client only when the backend is configured to (see forward_client_authorization).
CLIENT_AUTH_HEADER = "authorization"


# Bytes of an upstream error body kept for its message; the rest is not read.
MAX_ERROR_BODY = 64 * 1024

TRANSPORT_MESSAGES = {
    "connect": "cannot connect to upstream {}",
    "read": "upstream {} closed the connection",
    "protocol": "upstream {} sent a response that is not valid HTTP",
}


def transport_error(exc: HTTPError | HTTPTimeout, backend: str) -> UpstreamError:
    """A client failure as a gateway error: no connection (``connect``), a timeout, the connection lost
    mid-answer (``read``, retryable), or an answer that is not valid HTTP (``protocol``)."""
    if isinstance(exc, HTTPTimeout):
        return UpstreamTimeoutError(f"upstream {backend} timed out ({exc.phase})")
    return UpstreamError(TRANSPORT_MESSAGES[exc.kind].format(backend), kind=exc.kind)


def parse_error_body(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body
    text = raw.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    return {"error": {"message": f"upstream error: {text}", "type": "upstream_error", "param": None, "code": None}}


# Upstream response headers worth passing on to the client when an error passes through.
PASSED_ERROR_HEADERS = ("retry-after", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


class OpenAIHTTPBackend:
    """Calls ``{base_url}/chat/completions``; SSE is parsed into chunk objects, usage always requested."""

    def __init__(self, name: str, settings: OpenAIBackend) -> None:
        self.name = name
        self.model = settings.model
        self.settings = settings
        self.upstream_model = settings.upstream_model or settings.model
        self._pool: Pool | None = None
        self._total = settings.timeout.total
        self._stream_total = settings.timeout.stream_total
        headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.api_key_env:
            headers["authorization"] = f"Bearer {settings.api_key()}"
        self._headers = headers
        self._header_block = header_block(headers)
        self._origin = Origin.parse(settings.base_url)

    async def start(self) -> None:
        if self._pool is None:
            timeout = self.settings.timeout
            self._pool = Pool(self._origin, Limits(connect=timeout.connect, read=timeout.read, pool=timeout.pool,
                                                   write=timeout.write,
                                                   max_connections=self.settings.max_connections))

    def ready(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise UpstreamError(f"backend {self.name} is not started", kind="connect")
        return self._pool

    def _header_block_for(self, client_headers: dict[str, str] | None) -> bytes:
        if self.settings.forward_client_authorization and client_headers and CLIENT_AUTH_HEADER in client_headers:
            return header_block({**self._headers, "authorization": client_headers[CLIENT_AUTH_HEADER]})
        return self._header_block

    async def _send(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None,
                    model: str | None, deadline: float | None) -> Response:
        """POST the body; a status of 400 and above is read (its start) and raised as UpstreamStatusError.
        ``deadline`` (event-loop time) bounds the whole exchange, the body's reading included."""
        pool = self.pool
        content = orjson.dumps({**body, "model": model or self.upstream_model})
        try:
            request = pool.request_bytes("POST", path, self._header_block_for(client_headers), content)
            response = await pool.send(request, deadline)
        except (HTTPError, HTTPTimeout) as exc:
            raise self._failure(exc) from exc
        if 300 <= response.status < 400:  # redirects are not followed: a POST cannot be replayed blindly
            location = response.headers.get("location", "")
            response.release()
            raise UpstreamError(f"upstream {self.name} answered {response.status} (a redirect to {location!r}): "
                                "set its base_url to the final address", kind="protocol")
        if response.status >= 400:
            raw = await self._read(response, MAX_ERROR_BODY, truncate=True)
            headers = {k: response.headers[k] for k in PASSED_ERROR_HEADERS if k in response.headers}
            raise UpstreamStatusError(response.status, parse_error_body(raw, response.status), headers)
        return response

    def _failure(self, exc: HTTPError | HTTPTimeout) -> UpstreamError:
        if isinstance(exc, HTTPTimeout) and exc.phase == "deadline":
            return UpstreamTimeoutError(f"upstream {self.name} did not answer within {self._total:g} s")
        if isinstance(exc, BodyTooLargeError):
            return UpstreamError(f"upstream {self.name} sent {exc}", kind="protocol")
        return transport_error(exc, self.name)

    async def _read(self, response: Response, limit: int, truncate: bool = False) -> bytes:
        """The body, at most ``limit`` bytes (beyond it: cut, or a ``protocol`` error); the connection is
        released either way."""
        try:
            return await response.read(limit, truncate)
        except (HTTPError, HTTPTimeout) as exc:
            raise self._failure(exc) from exc

    async def complete(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> ChatObject:
        return await self.post_json("/chat/completions", body, client_headers)

    async def post_json(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                        model: str | None = None) -> dict[str, Any]:
        """POST ``body`` to ``{base_url}{path}`` (``model`` replaced by ``model`` or the upstream model name)
        and return the JSON object answered."""
        deadline = None if self._total is None else asyncio.get_running_loop().time() + self._total
        response = await self._send(path, body, client_headers, model, deadline)
        raw = await self._read(response, self.settings.max_response_bytes)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name} sent a body that is not JSON", kind="protocol") from None
        if not isinstance(answer, dict):
            raise UpstreamError(f"upstream {self.name} sent a JSON body that is not an object", kind="protocol")
        return answer

    async def stream(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> AsyncIterator[ChatObject]:
        options = body.get("stream_options")
        options = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        async for chunk in self.post_stream("/chat/completions", {**body, "stream_options": options}, client_headers):
            yield chunk

    async def post_stream(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                          model: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request and yield each SSE event's JSON object. A chat stream ends with ``[DONE]``;
        other paths (the Responses API) pass error events through as sent and may end after a terminal
        ``response.*`` event instead."""
        passthrough = path != "/chat/completions"
        loop = asyncio.get_running_loop()
        first_by = None if self._total is None else loop.time() + self._total
        try:
            async with asyncio.timeout_at(first_by):
                response = await self._send(path, body, client_headers, model, None)
        except TimeoutError:
            raise UpstreamTimeoutError(f"upstream {self.name} did not answer within {self._total:g} s") from None
        try:
            content_type = response.headers.get("content-type")
            if not is_event_stream(content_type):
                raise UpstreamError(f"upstream {self.name} answered a stream request with {content_type!r}, "
                                    "not text/event-stream", kind="protocol")
            deadlines = Deadlines(loop, first_by, self._stream_total)
            async for chunk in _sse_objects(response, self.name, self.settings.max_event_bytes, deadlines,
                                            passthrough):
                yield chunk
        finally:
            # Runs when the client goes away too (the consumer closes this generator): frees the connection.
            response.release()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        self._pool = None


class Deadlines:
    """When the next read of a stream must end: the first chunk by ``first_by``, the whole stream within
    ``stream_total`` of it. Either may be None (no bound)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, first_by: float | None, stream_total: float | None) -> None:
        self.loop = loop
        self.first_by = first_by
        self.stream_total = stream_total
        self.whole_by: float | None = None
        self.started = False

    def next_read(self) -> float | None:
        return self.whole_by if self.started else self.first_by

    def first_chunk_seen(self) -> None:
        if not self.started:
            self.started = True
            self.whole_by = None if self.stream_total is None else self.loop.time() + self.stream_total


# The Responses API ends its streams with one of these instead of ``[DONE]``.
TERMINAL_EVENTS = ("response.completed", "response.failed", "response.incomplete")


async def _sse_objects(response: Response, backend: str, max_event_bytes: int,
                       deadlines: Deadlines, passthrough: bool = False) -> AsyncIterator[ChatObject]:
    """Chunk objects from the ``data:`` events of the byte stream, each byte scanned once."""
    decoder = SSEDecoder(max_event_bytes)
    pieces = aiter(response.pieces())
    try:
        while True:
            deadline = deadlines.next_read()
            try:
                if deadline is None:
                    piece = await anext(pieces, None)
                else:
                    async with asyncio.timeout_at(deadline):
                        piece = await anext(pieces, None)
            except TimeoutError:
                raise UpstreamTimeoutError(f"upstream {backend} did not finish in time") from None
            if piece is None:
                break
            try:
                events = decoder.feed(piece)
            except EventTooLargeError as exc:
                raise UpstreamError(f"upstream {backend}: {exc}", kind="protocol") from None
            for data in events:
                if data.strip() == b"[DONE]":
                    return
                deadlines.first_chunk_seen()
                obj = _event_object(data, backend, passthrough)
                yield obj
                if passthrough and obj.get("type") in TERMINAL_EVENTS:
                    return
    except (HTTPError, HTTPTimeout) as exc:
        raise transport_error(exc, backend) from exc
    raise UpstreamError(f"upstream {backend} ended the stream without [DONE]", kind="read")


def _event_object(data: bytes, backend: str, passthrough: bool = False) -> ChatObject:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"upstream {backend} sent an invalid stream event", kind="protocol") from None
    if not passthrough and isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        raise UpstreamError(str(obj["error"].get("message") or "upstream stream error"), kind="stream_error")
    if not isinstance(obj, dict):
        raise UpstreamError(f"upstream {backend} sent a stream event that is not an object", kind="protocol")
    return obj
