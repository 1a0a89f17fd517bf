"""Validate a chat request for the local backend and shape its OpenAI responses and stream chunks."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.base import ChatBody, ChatObject
from gateway.backends.local.generation import SamplingParams
from gateway.errors import InvalidRequestError
from gateway.protocol import validate_chat
from gateway.settings import LocalBackend

MAX_N = 16
MAX_STOP = 4
# Request fields this backend cannot honour; accepting them silently would give a misleading answer.
UNSUPPORTED = ("functions", "logprobs", "top_logprobs")


@dataclass(frozen=True, slots=True)
class LocalRequest:
    messages: list[dict[str, Any]]
    params: SamplingParams
    n: int
    tools: list[dict[str, Any]] = field(default_factory=list)  # rendered by the chat template
    tool_choice: str | dict[str, Any] = "auto"  # "auto", "required" or {"type": "function", ...}
    schema: dict[str, Any] | None = None  # response_format's JSON schema ({"type": "object"} for json_object)


def _flag(body: ChatBody, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{key} must be a boolean", param=key)
    return value


def _content(message: Any, index: int) -> dict[str, Any]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise InvalidRequestError(f"messages[{index}] must be an object with a role", param="messages")
    content = message.get("content")
    if isinstance(content, list):
        # Text parts only: a local text model has nothing to do with images or audio.
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError(
                    f"messages[{index}].content: only text parts are supported by this model",
                    param="messages",
                )
            texts.append(part["text"])
        content = "".join(texts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise InvalidRequestError(f"messages[{index}].content must be a string or text parts", param="messages")
    out: dict[str, Any] = {"role": message["role"], "content": content}
    if isinstance(message.get("tool_calls"), list):  # an assistant turn that called tools
        out["tool_calls"] = message["tool_calls"]
    if isinstance(message.get("tool_call_id"), str):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def _is_function_tool(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return tool.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str)


def _tools(body: ChatBody) -> tuple[list[dict[str, Any]], str | dict[str, Any]]:
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(_is_function_tool(t) for t in tools):
        raise InvalidRequestError("tools must be a list of {type: function, function: {name, ...}}", param="tools")
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return [], "none"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if choice.get("type") != "function" or not chosen:
            raise InvalidRequestError(f"tool_choice names no tool in tools: {name!r}", param="tool_choice")
        return tools, choice
    if choice not in ("auto", "required"):
        raise InvalidRequestError("tool_choice must be none, auto, required or a function", param="tool_choice")
    if choice == "required" and not tools:
        raise InvalidRequestError("tool_choice is required but no tools were given", param="tool_choice")
    return tools, choice


def _schema(body: ChatBody) -> dict[str, Any] | None:
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequestError("response_format.json_schema.schema must be a JSON schema object",
                                      param="response_format.json_schema.schema")
        return schema
    raise InvalidRequestError("response_format.type must be text, json_object or json_schema",
                              param="response_format.type")


def _stop(body: ChatBody) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or len(items) > MAX_STOP or not all(isinstance(s, str) and s for s in items):
        raise InvalidRequestError(f"stop must be a non-empty string or a list of up to {MAX_STOP}", param="stop")
    return tuple(items)


def parse_request(body: ChatBody, settings: LocalBackend, stream: bool) -> LocalRequest:
    """The validated request; raises InvalidRequestError (400) naming the offending parameter.

    The wire schema (``gateway.protocol``: types and ranges) first, then what this backend adds: text only,
    fewer choices and stop strings, no logprobs."""
    chat = validate_chat({**body, "model": settings.model})
    messages = body["messages"]
    for key in UNSUPPORTED:
        if body.get(key):
            raise InvalidRequestError(f"{key} is not supported by the local model {settings.model}", param=key)
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    n = chat.n or 1
    if n > MAX_N:
        raise InvalidRequestError(f"n must be between 1 and {MAX_N}", param="n")
    if stream and n > 1:
        raise InvalidRequestError("n > 1 is not supported with stream: true by local models", param="n")
    params = SamplingParams(
        # The configured cap bounds worst-case CPU time per request; longer asks end with "length".
        max_new_tokens=min(max_tokens or settings.max_new_tokens, settings.max_new_tokens),
        temperature=settings.default_temperature if chat.temperature is None else chat.temperature,
        top_p=settings.default_top_p if chat.top_p is None else chat.top_p,
        stop=_stop(body),
        seed=chat.seed,
        ignore_eos=_flag(body, "ignore_eos"),
    )
    tools, tool_choice = _tools(body)
    return LocalRequest([_content(m, i) for i, m in enumerate(messages)], params, n, tools, tool_choice, _schema(body))


def too_long(prompt_tokens: int, limit: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
        f"{prompt_tokens} tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


class Shaper:
    """Builds OpenAI ``chat.completion`` objects and ``chat.completion.chunk`` objects for one request."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def completion(self, choices: list[tuple[str | dict[str, Any], str]], prompt_tokens: int,
                   completion_tokens: int) -> ChatObject:
        """``choices``: (text or a whole message, finish reason) each."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": i,
                    "message": text if isinstance(text, dict) else message(text),
                    "logprobs": None,
                    "finish_reason": reason,
                }
                for i, (text, reason) in enumerate(choices)
            ],
            "usage": usage(prompt_tokens, completion_tokens),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> ChatObject:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> ChatObject:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }


def message(content: str | None, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An assistant message as OpenAI shapes it: ``refusal`` always present (null: local models never refuse
    through the API), ``tool_calls`` only when there are some."""
    out: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
