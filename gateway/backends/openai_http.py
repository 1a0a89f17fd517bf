"""Backend for any OpenAI-compatible HTTP server: one pooled aiohttp session per backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.backends.base import ChatBody, ChatObject
from gateway.errors import UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from gateway.http.sse_decoder import EventTooLargeError, SSEDecoder, is_event_stream
from gateway.settings import OpenAIBackend, Timeouts

# Forwarded from the client only when the backend is configured to (see forward_client_authorization).
CLIENT_AUTH_HEADER = "authorization"


# Bytes of an upstream error body kept for its message; the rest is not read.
MAX_ERROR_BODY = 64 * 1024


def transport_error(exc: BaseException, backend: str) -> UpstreamError:
    """Map an aiohttp exception to a gateway error: no connection (``connect``), a timeout, the connection
    lost mid-answer (``read``, retryable), or an answer that is not valid HTTP (``protocol``)."""
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return UpstreamError(f"cannot connect to upstream {backend}", kind="connect")
    if isinstance(exc, TimeoutError):  # aiohttp.ServerTimeoutError too: pool, connect and read timeouts
        return UpstreamTimeoutError(f"upstream {backend} timed out")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)):
        return UpstreamError(f"upstream {backend} closed the connection", kind="read")
    return UpstreamError(f"upstream {backend} sent a response that is not valid HTTP", kind="protocol")


# What the transport may raise besides a timeout.
TRANSPORT_ERRORS = (aiohttp.ClientError, ConnectionError)


def client_timeout(timeout: Timeouts, total: float | None = None) -> aiohttp.ClientTimeout:
    """httpx-style limits on aiohttp: ``pool`` bounds getting a connection (waiting for a free one included),
    ``connect`` opening a new one, ``read`` each read, ``total`` the whole exchange. aiohttp has no write
    timeout: ``total`` bounds it."""
    return aiohttp.ClientTimeout(total=total, connect=timeout.pool, sock_connect=timeout.connect,
                                 sock_read=timeout.read)


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
        self._base = settings.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._total = settings.timeout.total
        self._stream_total = settings.timeout.stream_total
        # A JSON answer within ``total``, left to aiohttp's own timer (a stream's bounds are its own: Deadlines).
        self._json_timeout = client_timeout(settings.timeout, settings.timeout.total)
        self._stream_timeout = client_timeout(settings.timeout)
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.api_key_env:
            self._headers["authorization"] = f"Bearer {os.environ.get(settings.api_key_env, '')}"

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.settings.max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._stream_timeout,
                                                  trust_env=False, skip_auto_headers=("User-Agent",))

    def ready(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError(f"backend {self.name} is not started", kind="connect")
        return self._session

    def _headers_for(self, client_headers: dict[str, str] | None) -> dict[str, str]:
        if self.settings.forward_client_authorization and client_headers and CLIENT_AUTH_HEADER in client_headers:
            return {**self._headers, "authorization": client_headers[CLIENT_AUTH_HEADER]}
        return self._headers

    async def _send(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None,
                    model: str | None, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        content = orjson.dumps({**body, "model": model or self.upstream_model})
        try:
            response = await self.session.post(self._base + path, data=content,
                                               headers=self._headers_for(client_headers), timeout=timeout)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, self.name) from exc
        if response.status >= 400:
            raw = await self._read(response, MAX_ERROR_BODY, truncate=True)
            headers = {k: response.headers[k] for k in PASSED_ERROR_HEADERS if k in response.headers}
            raise UpstreamStatusError(response.status, parse_error_body(raw, response.status), headers)
        return response

    async def _read(self, response: aiohttp.ClientResponse, limit: int, truncate: bool = False) -> bytes:
        """The body, at most ``limit`` bytes (beyond it: cut, or a ``protocol`` error); the connection is
        released either way."""
        def too_large() -> UpstreamError:
            return UpstreamError(f"upstream {self.name} sent an answer larger than {limit} bytes", kind="protocol")

        try:
            declared = response.content_length
            if declared is not None and declared <= limit:
                return await response.read()
            if declared is not None and not truncate:
                raise too_large()
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    if truncate:
                        break
                    raise too_large()
            return b"".join(chunks)[:limit]
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, self.name) from exc
        finally:
            response.release()

    async def complete(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> ChatObject:
        return await self.post_json("/chat/completions", body, client_headers)

    async def post_json(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                        model: str | None = None) -> dict[str, Any]:
        """POST ``body`` to ``{base_url}{path}`` (``model`` replaced by ``model`` or the upstream model name)
        and return the JSON object answered."""
        try:
            response = await self._send(path, body, client_headers, model, self._json_timeout)
            raw = await self._read(response, self.settings.max_response_bytes)
        except TimeoutError:  # aiohttp's total timer (its socket timeouts are ClientErrors, mapped on the way)
            raise UpstreamTimeoutError(f"upstream {self.name} did not answer within {self._total:g} s") from None
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
                response = await self._send(path, body, client_headers, model, self._stream_timeout)
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
        if self._session is not None:
            await self._session.close()
        self._session = None


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


async def _sse_objects(response: aiohttp.ClientResponse, backend: str, max_event_bytes: int,
                       deadlines: Deadlines, passthrough: bool = False) -> AsyncIterator[ChatObject]:
    """Chunk objects from the ``data:`` events of the byte stream, each byte scanned once."""
    decoder = SSEDecoder(max_event_bytes)
    pieces = aiter(response.content.iter_any())
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
    except TRANSPORT_ERRORS as exc:
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
