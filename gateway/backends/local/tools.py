"""Tool calling on a local model through its chat template: Hermes-style ``<tool_call>`` blocks (Qwen2.5) parsed
into OpenAI ``tool_calls``, whole or as stream deltas."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def supports_tools(chat_template: Any) -> bool:
    """Whether the model's chat template renders ``tools`` (Qwen2.5's does, SmolLM2's does not)."""
    return isinstance(chat_template, str) and "tools" in chat_template and OPEN in chat_template


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message as chat templates expect it: tool call arguments as objects, not JSON strings."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return message
    shaped = []
    for call in calls:
        function = dict(call.get("function") or {}) if isinstance(call, dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments)
            except ValueError:
                pass  # the template renders what it was given
        shaped.append({**call, "function": function})
    return {**message, "tool_calls": shaped}


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text

    def openai(self, index: int | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                "function": {"name": self.name, "arguments": self.arguments}}
        if index is not None:
            call["index"] = index
        return call


def parse_call(text: str) -> ToolCall | None:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    if not isinstance(found, dict) or not isinstance(found.get("name"), str):
        return None
    arguments = found.get("arguments", found.get("parameters", {}))
    return ToolCall(found["name"], arguments if isinstance(arguments, str) else json.dumps(arguments))


class ToolCallText:
    """Splits generated text into content and tool calls as it arrives, holding back what may be the start
    of a ``<tool_call>`` tag; a block that does not parse stays content."""

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self.calls: list[ToolCall] = []
        self.content = ""

    def feed(self, text: str) -> list[str | ToolCall]:
        self._buffer += text
        out: list[str | ToolCall] = []
        while True:
            if self._inside:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return self._record(out)
                block, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE):]
                self._inside = False
                call = parse_call(block.strip())
                out.append(call if call is not None else OPEN + block + CLOSE)
            else:
                start = self._buffer.find(OPEN)
                if start < 0:
                    keep = _partial_tag(self._buffer)
                    cut = len(self._buffer) - keep
                    safe, self._buffer = self._buffer[:cut], self._buffer[cut:]
                    if safe:
                        out.append(safe)
                    return self._record(out)
                if start:
                    out.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN):]
                self._inside = True

    def end(self) -> list[str | ToolCall]:
        """What is left when generation ends: an unfinished block is returned as the text it was."""
        rest = (OPEN if self._inside else "") + self._buffer
        self._buffer, self._inside = "", False
        return self._record([rest] if rest else [])

    def _record(self, items: list[str | ToolCall]) -> list[str | ToolCall]:
        for item in items:
            if isinstance(item, ToolCall):
                self.calls.append(item)
            else:
                self.content += item
        return items


def _partial_tag(text: str) -> int:
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:size]):
            return size
    return 0


def bare_call(text: str, names: set[str]) -> ToolCall | None:
    """A whole answer that is only ``{"name": <a tool>, "arguments": {...}}`` (bare or in a code fence): the
    form small models often use instead of their template's tags. Anything else is content."""
    body = text.strip()
    if body.startswith("```"):
        body = body.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    if not body.startswith("{"):
        return None
    call = parse_call(body)
    return call if call is not None and call.name in names else None


def split_answer(text: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """A whole generated text -> (content or None, tool calls); ``names``: the tools offered."""
    parser = ToolCallText()
    items = parser.feed(text) + parser.end()
    calls = [item for item in items if isinstance(item, ToolCall)]
    content = "".join(item for item in items if isinstance(item, str))
    if not calls and (call := bare_call(content, names)) is not None:
        return None, [call]
    if calls and not content.strip():
        return None, calls
    return content.strip() if calls else content, calls
