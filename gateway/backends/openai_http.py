"""Backend for any OpenAI-compatible HTTP server: one pooled httpx client (aiohttp transport) per backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from gateway.backends.base import ChatBody, ChatObject
from gateway.errors import UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from gateway.settings import OpenAIBackend

# Forwarded from the client only when the backend is configured to (see forward_client_authorization).
CLIENT_AUTH_HEADER = "authorization"


def transport_error(exc: Exception, backend: str) -> UpstreamError:
    """Map a transport exception to a gateway error, judging by the original aiohttp exception where there is one."""
    cause = exc.__cause__ or exc
    if isinstance(cause, (aiohttp.ServerTimeoutError, TimeoutError)) or (
        isinstance(exc, httpx.TimeoutException) and not isinstance(cause, aiohttp.ClientConnectorError)
    ):
        return UpstreamTimeoutError(f"upstream {backend} timed out")
    if isinstance(cause, (aiohttp.ClientConnectorError, ConnectionRefusedError)) or isinstance(exc, httpx.ConnectError):
        return UpstreamError(f"cannot connect to upstream {backend}", kind="connect")
    return UpstreamError(f"upstream {backend} broke the connection", kind="read")


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

    def __init__(self, name: str, settings: OpenAIBackend, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.model = settings.model
        self.settings = settings
        self.upstream_model = settings.upstream_model or settings.model
        self._base = settings.base_url.rstrip("/")
        self._url = httpx.URL(self._base + "/chat/completions")
        self._transport = transport
        self._owns_transport = transport is None
        timeout = settings.timeout
        self._timeout = {"connect": timeout.connect, "read": timeout.read, "write": timeout.write,
                         "pool": timeout.pool}
        self._headers = httpx.Headers({"content-type": "application/json", "accept": "application/json",
                                       "host": self._url.netloc.decode("ascii")})
        if settings.api_key_env:
            self._headers["authorization"] = f"Bearer {os.environ.get(settings.api_key_env, '')}"

    async def start(self) -> None:
        if self._transport is None:
            limits = httpx.Limits(max_connections=self.settings.max_connections, keepalive_expiry=30)
            self._transport = AiohttpTransport(limits=limits, trust_env=False)

    def ready(self) -> bool:
        return self._transport is not None

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        if self._transport is None:
            raise UpstreamError(f"backend {self.name} is not started", kind="connect")
        return self._transport

    def _request(self, body: ChatBody, client_headers: dict[str, str] | None, url: httpx.URL | None = None,
                 model: str | None = None) -> httpx.Request:
        headers = self._headers
        if self.settings.forward_client_authorization and client_headers and CLIENT_AUTH_HEADER in client_headers:
            headers = headers.copy()
            headers["authorization"] = client_headers[CLIENT_AUTH_HEADER]
        content = orjson.dumps({**body, "model": model or self.upstream_model})
        # Built directly and sent on the transport: httpx's client layer (URL merging, cookies, redirects)
        # costs as much as the transport itself, and a proxy needs none of it.
        return httpx.Request("POST", url or self._url, headers=headers, content=content,
                             extensions={"timeout": self._timeout})

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.name) from exc
        if response.status_code >= 400:
            raw = await self._read(response)
            headers = {k: response.headers[k] for k in PASSED_ERROR_HEADERS if k in response.headers}
            raise UpstreamStatusError(response.status_code, parse_error_body(raw, response.status_code), headers)
        return response

    async def _read(self, response: httpx.Response) -> bytes:
        """The whole body, with the connection released either way."""
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.name) from exc
        finally:
            await response.aclose()

    async def complete(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> ChatObject:
        return await self.post_json("/chat/completions", body, client_headers)

    async def post_json(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                        model: str | None = None) -> dict[str, Any]:
        """POST ``body`` to ``{base_url}{path}`` (``model`` replaced by ``model`` or the upstream model name)
        and return the JSON object answered."""
        url = self._url if path == "/chat/completions" else httpx.URL(self._base + path)
        raw = await self._read(await self._send(self._request(body, client_headers, url, model)))
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
        response = await self._send(self._request({**body, "stream_options": options}, client_headers))
        try:
            async for chunk in _sse_objects(response, self.name):
                yield chunk
        finally:
            # Runs when the client goes away too (the consumer closes this generator): frees the connection.
            await response.aclose()

    async def post_stream(self, path: str, body: dict[str, Any], client_headers: dict[str, str] | None = None,
                          model: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request and yield each SSE event's JSON object as sent. A stream may end with
        ``[DONE]`` (chat, completions) or after a terminal ``response.*`` event (the Responses API)."""
        url = httpx.URL(self._base + path)
        response = await self._send(self._request(body, client_headers, url, model))
        try:
            async for event in _sse_objects(response, self.name, passthrough=True):
                yield event
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._transport is not None and self._owns_transport:
            await self._transport.aclose()
        self._transport = None


# The Responses API ends its streams with one of these instead of ``[DONE]``.
TERMINAL_EVENTS = ("response.completed", "response.failed", "response.incomplete")


async def _sse_objects(response: httpx.Response, backend: str, passthrough: bool = False) -> AsyncIterator[ChatObject]:
    """Parse ``data:`` events from the byte stream, tolerating events split across reads. ``passthrough``:
    error events are yielded as sent, and a terminal Responses event ends the stream like ``[DONE]``."""
    buffer = b""
    done = False
    try:
        async for piece in response.aiter_bytes():
            # SSE allows CRLF line ends (sse-starlette servers send them); a CR cut from its LF by a read
            # boundary stays in the buffer and is joined when the next piece arrives.
            buffer = (buffer + piece).replace(b"\r\n", b"\n")
            while True:
                end = buffer.find(b"\n\n")
                if end < 0:
                    break
                event, buffer = buffer[:end], buffer[end + 2 :]
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        return
                    obj = _event_object(data, backend, passthrough)
                    yield obj
                    if passthrough and obj.get("type") in TERMINAL_EVENTS:
                        done = True
                        return
    except httpx.HTTPError as exc:
        raise transport_error(exc, backend) from exc
    if not done:
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
