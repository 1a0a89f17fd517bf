"""The app class: FastAPI, with the chat endpoint's requests sent straight down their own short chain."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

CHAT_PATH = "/v1/chat/completions"


class TiergateApp(FastAPI):
    """``POST /v1/chat/completions`` goes to ``chat`` (the host check, the guard and the endpoint, the same
    middleware instances the full stack uses), past FastAPI's generic layers: server-error and exception
    middleware, the body limit, the exit stack and route matching, about a tenth of the gateway's CPU per
    request, none of which that endpoint needs (it turns every exception into its answer itself). Every other
    request, and the chat path's other methods (a 405), take the full stack."""

    def __init__(self, chat: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            scope["app"] = self
            await self.chat(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
