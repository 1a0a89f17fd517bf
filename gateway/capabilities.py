"""Tier capabilities (tools, json_schema, vision, context length) and what a chat request needs of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from gateway.admission.limits import estimate_tokens, message_chars
from gateway.settings import LocalBackend, OpenAIBackend

Capability = Literal["tools", "json_schema", "vision", "context"]
IMAGE_PARTS = ("image_url", "input_image")


@dataclass(frozen=True, slots=True)
class TierCapabilities:
    tools: bool
    json_schema: bool
    vision: bool
    context_tokens: int | None

    def complete(self) -> bool:
        """Supports everything a request can need: tools, JSON schemas and images, with no context limit."""
        return self.tools and self.json_schema and self.vision and self.context_tokens is None

    def missing(self, needs: Needs) -> list[Capability]:
        lacking: list[Capability] = []
        if needs.tools and not self.tools:
            lacking.append("tools")
        if needs.json_schema and not self.json_schema:
            lacking.append("json_schema")
        if needs.vision and not self.vision:
            lacking.append("vision")
        if self.context_tokens is not None and needs.prompt_tokens > self.context_tokens:
            lacking.append("context")
        return lacking


@dataclass(frozen=True, slots=True)
class Needs:
    """What one chat request asks of the tier that answers it."""

    tools: bool = False
    json_schema: bool = False
    vision: bool = False
    prompt_tokens: int = 0  # a character-based estimate


@runtime_checkable
class KnowsCapabilities(Protocol):
    """A backend that can tell what its model supports (the in-process one, once its model is loaded)."""

    def supports_tools(self) -> bool: ...

    def supports_json_schema(self) -> bool: ...


def capabilities_of(settings: OpenAIBackend | LocalBackend, backend: object = None) -> TierCapabilities:
    """The tier's declared capabilities, unset ones by default: HTTP upstreams are assumed capable; an
    in-process model supports what its backend says (tools when its chat template has them, JSON schemas with
    the grammar engine installed), text only, within ``max_input_tokens``."""
    declared = settings.capabilities
    local = isinstance(settings, LocalBackend)
    # One isinstance against the runtime-checkable protocol: each costs microseconds, on every routed request.
    knowing = backend if isinstance(backend, KnowsCapabilities) else None
    context = declared.context_tokens
    if context is None and isinstance(settings, LocalBackend):
        context = settings.max_input_tokens
    tools = knowing.supports_tools() if knowing is not None else not local
    json_schema = knowing.supports_json_schema() if knowing is not None else not local
    return TierCapabilities(
        tools=declared.tools if declared.tools is not None else tools,
        json_schema=declared.json_schema if declared.json_schema is not None else json_schema,
        vision=declared.vision if declared.vision is not None else not (local or knowing is not None),
        context_tokens=context,
    )


def _has_image(messages: Iterable[Any]) -> bool:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") in IMAGE_PARTS for part in content):
            return True
    return False


def needs_of(body: dict[str, Any], prompt_tokens: int | None = None) -> Needs:
    """``prompt_tokens``: the estimate admission already made from the same messages, if any."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    response_format = body.get("response_format")
    structured = isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object")
    return Needs(
        tools=bool(body.get("tools") or body.get("functions")),
        json_schema=structured,
        vision=_has_image(messages),
        prompt_tokens=prompt_tokens if prompt_tokens is not None else estimate_tokens(message_chars(messages)),
    )


def describe(missing: list[Capability]) -> str:
    words = {"tools": "tool calling (tools)", "json_schema": "structured output (response_format)",
             "vision": "image input (vision)", "context": "a context window this long"}
    return ", ".join(words[item] for item in missing)
