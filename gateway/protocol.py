"""OpenAI wire models: validate a chat request without changing it, and name the offending param."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequestError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Open(BaseModel):
    # Unknown fields are allowed: new OpenAI parameters pass through untouched.
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(Open):
    type: str


class Message(Open):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(Open):
    include_usage: bool | None = None


class ChatCompletionRequest(Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[ContentPart]", "int", "float", "bool", "none", "literal"):
            break  # pydantic's union branch names are not part of the request's path
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_body(raw: bytes) -> dict[str, Any]:
    """Bytes -> the JSON object the client sent, or a 400 saying what is wrong."""
    if not raw:
        raise InvalidRequestError("request body is empty; expected a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    return body


def validate_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    """Check the request against the schema; the caller keeps forwarding ``body`` itself, not this model."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _param(tuple(first["loc"]))
        raise InvalidRequestError(f"invalid value for '{param}': {first['msg']}", param=param) from None
