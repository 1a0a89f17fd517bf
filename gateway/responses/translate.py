"""Responses API <-> chat completions: a ``/v1/responses`` request as chat messages, a chat answer as a response."""

from __future__ import annotations

import time
import uuid
from typing import Any

from gateway.errors import InvalidRequestError

# Request fields echoed in the response object, with OpenAI's defaults.
ECHOED: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
    "previous_response_id": None, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
    "truncation": "disabled",
}
TEXT_PARTS = ("input_text", "output_text", "text")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _unsupported(what: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"{what} is not supported by this tier (its requests are translated to chat "
                               "completions)", param=param, code="unsupported_parameter")


def _content(content: Any, param: str, strict: bool) -> str | list[dict[str, Any]]:
    """Responses content (a string or input parts) -> chat content: a string when it is all text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"'{param}' must be a string or a list of content parts", param=param)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part, dict):
            image: dict[str, Any] = {"url": part.get("image_url") or ""}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif strict:
            raise _unsupported(f"content part type {kind!r}", f"{param}[{index}]")
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def input_messages(items: Any, strict: bool = True) -> list[dict[str, Any]]:
    """``input`` (a string or a list of items) -> chat messages. ``strict``: items chat cannot express are a
    400; otherwise they are skipped (the text a router scores, for a tier that is sent the items as they are)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequestError("'input' must be a string or a list of input items", param="input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"'{param}' must be an object", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequestError(f"'{param}.role' must be user, assistant, system or developer",
                                          param=f"{param}.role")
            # Older chat servers know no "developer" role; it means what "system" meant.
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _content(item.get("content"), f"{param}.content", strict)})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id", "")), "type": "function",
                    "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # parallel calls, or text then calls: one turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(output, f"{param}.output", strict)
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                             "content": text if isinstance(text, str) else ""})
        elif kind == "reasoning":
            continue  # a model's own reasoning summary: nothing a chat model can take back
        elif strict:
            raise _unsupported(f"input item type {kind!r}", f"{param}.type")
    return messages


def _tools(tools: Any, strict: bool) -> list[dict[str, Any]]:
    out = []
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        if isinstance(tool, dict) and tool.get("type") == "function":
            function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
            out.append({"type": "function", "function": function})
        elif strict:
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(f"tool type {kind!r}", f"tools[{index}]")
    return out


def _tool_choice(choice: Any, strict: bool) -> Any:
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            return {"type": "function", "function": {"name": choice.get("name")}}
        if strict:
            raise _unsupported(f"tool_choice type {choice.get('type')!r}", "tool_choice")
        return None
    return choice


def response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` -> chat's ``response_format``."""
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequestError(f"unknown text.format type {fmt.get('type')!r}", param="text.format.type")


def to_chat(body: dict[str, Any], history: list[dict[str, Any]], strict: bool = True) -> dict[str, Any]:
    """The chat completions request that asks what a Responses request asks; ``history`` is the conversation
    so far (``previous_response_id``), without its instructions, which never carry over."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        messages.extend(input_messages(instructions, strict))
    messages.extend(history)
    messages.extend(input_messages(body.get("input", []), strict))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "user", "seed"):
        if body.get(key) is not None:
            chat[key] = body[key]
    tools = _tools(body.get("tools"), strict)
    if tools:
        chat["tools"] = tools
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
        choice = _tool_choice(body.get("tool_choice"), strict)
        if choice is not None:
            chat["tool_choice"] = choice
    fmt = response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    return chat


def usage(chat_usage: Any) -> dict[str, Any] | None:
    if not isinstance(chat_usage, dict):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    out_details = chat_usage.get("completion_tokens_details")
    reasoning = int(out_details.get("reasoning_tokens") or 0) if isinstance(out_details, dict) else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


def chat_usage(response_usage: Any) -> dict[str, Any] | None:
    """A Responses ``usage`` in chat's field names (accounting reads those)."""
    if not isinstance(response_usage, dict):
        return None
    details = response_usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return {"prompt_tokens": response_usage.get("input_tokens"),
            "completion_tokens": response_usage.get("output_tokens"),
            "prompt_tokens_details": {"cached_tokens": cached or 0}}


def message_item(text: str | None, refusal: str | None, item_id: str, status: str = "completed") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    else:
        content.append({"type": "output_text", "text": text or "", "annotations": [], "logprobs": []})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(call: dict[str, Any], item_id: str, status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "function_call", "id": item_id, "call_id": str(call.get("id") or new_id("call")),
            "name": str(function.get("name") or ""), "arguments": str(function.get("arguments") or ""),
            "status": status}


def skeleton(body: dict[str, Any], response_id: str, model: str, stored: bool) -> dict[str, Any]:
    """A response object in progress: the request's echoed fields, no output yet."""
    response: dict[str, Any] = {"id": response_id, "object": "response", "created_at": int(time.time()),
                                "status": "in_progress", "error": None, "incomplete_details": None,
                                "model": model, "output": [], "store": stored,
                                "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
                                "reasoning": {"effort": None, "summary": None}}
    for key, default in ECHOED.items():
        value = body.get(key)
        response[key] = default if value is None else value
    if isinstance(body.get("user"), str):
        response["user"] = body["user"]
    return response


def finish(response: dict[str, Any], finish_reason: Any, chat_usage_obj: Any) -> dict[str, Any]:
    """Set the final status, usage and completion time of a response object."""
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
    counted = usage(chat_usage_obj)
    if counted is not None:  # the schema has no null usage: absent when the upstream counted nothing
        response["usage"] = counted
    return response


def from_chat(body: dict[str, Any], answer: dict[str, Any], response_id: str, stored: bool) -> dict[str, Any]:
    """A ``chat.completion`` -> the ``response`` object the Responses API would have answered."""
    response = skeleton(body, response_id, str(answer.get("model") or body.get("model")), stored)
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    if message.get("content") or message.get("refusal") or not calls:
        response["output"].append(message_item(message.get("content"), message.get("refusal"), new_id("msg")))
    for call in calls:
        response["output"].append(function_call_item(call, new_id("fc")))
    return finish(response, choice.get("finish_reason"), answer.get("usage"))


def output_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as chat messages (the history ``previous_response_id`` continues)."""
    items = [item for item in output if item.get("type") in ("message", "function_call")]
    return input_messages(items, strict=False)
