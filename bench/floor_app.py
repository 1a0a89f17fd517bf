"""The floor a Python gateway can reach: a minimal Starlette + aiohttp pass-through for the overhead benchmark.

No validation, routing, authentication, accounting or metrics: the request body goes to the upstream as it
came and the answer comes back as it went (JSON buffered, SSE streamed). It runs under the same server as
Tiergate (uvicorn with uvloop and httptools), so the gap between the two is what Tiergate's own work costs.

    FLOOR_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn --factory bench.floor_app:create_app --port 8100 \
        --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def create_app(upstream: str | None = None) -> Starlette:
    base = (upstream or os.environ["FLOOR_UPSTREAM"]).rstrip("/")
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)))
        yield
        await sessions.pop().close()

    async def chat_completions(request: Request) -> Response:
        body = await request.body()
        headers = {"content-type": "application/json", "authorization": request.headers.get("authorization", "")}
        upstream = await sessions[0].post(f"{base}/chat/completions", data=body, headers=headers)
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for piece in upstream.content.iter_any():
                        yield piece
                finally:
                    upstream.release()

            return StreamingResponse(relay(), status_code=upstream.status, media_type="text/event-stream")
        data = await upstream.read()
        upstream.release()
        return Response(data, status_code=upstream.status, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]), Route("/healthz", healthz)]
    return Starlette(routes=routes, lifespan=lifespan)
