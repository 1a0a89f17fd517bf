"""Which conversation a request belongs to, and which tool calls it answers or an answer issues."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gateway.settings import ConversationSettings

TOOL_PREFIX = "tool:"
CONVERSATION_PREFIX = "conv:"


def tool_key(call_id: str) -> str:
    return TOOL_PREFIX + call_id


def answered_tool_calls(messages: Any) -> list[str]:
    """The ids of the tool calls the trailing ``role: tool`` messages answer (empty unless a tool loop
    continues: the last message is a tool result)."""
    ids: list[str] = []
    if not isinstance(messages, list):
        return ids
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        call_id = message.get("tool_call_id")
        if isinstance(call_id, str) and call_id:
            ids.append(call_id)
    return ids


def issued_tool_calls(answer: Any) -> list[str]:
    """The ids of the tool calls in a ``chat.completion``, or in one ``chat.completion.chunk``'s deltas."""
    ids: list[str] = []
    choices = answer.get("choices") if isinstance(answer, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or choice.get("delta")
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else []:
            call_id = call.get("id") if isinstance(call, dict) else None
            if isinstance(call_id, str) and call_id:
                ids.append(call_id)
    return ids


def conversation_key(body: dict[str, Any], headers: dict[str, str], settings: ConversationSettings) -> str | None:
    """The key a conversation is pinned under, from the first configured source the request carries."""
    for source in settings.keys:
        value: Any = None
        if source == "session":
            value = headers.get(settings.session_header.lower())
        elif source == "user":
            value = body.get("user") or body.get("safety_identifier")
        elif source == "metadata":
            metadata = body.get("metadata")
            value = metadata.get(settings.metadata_key) if isinstance(metadata, dict) else None
        elif source == "hash":
            value = _opening_hash(body.get("messages"))
        if isinstance(value, str) and value:
            return f"{CONVERSATION_PREFIX}{source}:{value}"
    return None


def _opening_hash(messages: Any) -> str | None:
    """A hash of the conversation's opening: its messages up to and including the first user turn, which
    every later turn repeats."""
    if not isinstance(messages, list):
        return None
    head: list[Any] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        head.append([message.get("role"), message.get("content")])
        if message.get("role") == "user":
            return hashlib.sha256(orjson.dumps(head, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return None
