"""The gateway's OpenAPI document: FastAPI's, plus the chat endpoint, which is a plain route for speed."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.protocol import ChatCompletionRequest

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def chat_path() -> dict[str, Any]:
    return {
        "post": {
            "summary": "Create a chat completion, routed to the small or large tier",
            "operationId": "createChatCompletion",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
            },
            "responses": {
                "200": {
                    "description": "A chat.completion object, or an SSE stream of chat.completion.chunk events",
                    "content": {"application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _error("Malformed JSON or a request that violates the schema"),
                "401": _error("Missing or invalid gateway API key"),
                "403": _error("The API key may not use this model or tier"),
                "404": _error("Unknown model"),
                "408": _error("Request headers or body not received in time (server.*_timeout_s)"),
                "413": _error("Request body too large"),
                "415": _error("Content-Type is not application/json"),
                "429": _error("Rate limit or queue full"),
                "431": _error("Request headers larger than server.max_header_bytes"),
                "500": _error("Internal error in the gateway"),
                "502": _error("Upstream failure"),
                "503": _error("Circuit open for the backend, or the gateway is shutting down"),
                "504": _error("Upstream timeout"),
            },
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe ``POST /v1/chat/completions`` too."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request_schema.pop("$defs", {}))
            components["ChatCompletionRequest"] = request_schema
            components["Error"] = ERROR_SCHEMA
            schema.setdefault("paths", {})["/v1/chat/completions"] = chat_path()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
