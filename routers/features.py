"""Messages -> the one text a router scores: user turns newest first, text parts only, bounded length.

Why this shape:
- The newest user turn is the question being answered now, so it leads and is never the part cut off;
  earlier user turns follow newest-first, so truncation from the right drops the oldest context.
- Assistant turns are the models' own words, not the difficulty of the request: left out.
- A system prompt is usually the same boilerplate on every request of an application and would drown the
  signal, so it is left out unless configured (``include_system``); when included it goes last.
- An over-long turn keeps its head and its tail (the question is often at the end of a pasted document).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

TURN_SEPARATOR = "\n\n"
ELLIPSIS = " … "


def content_text(content: Any) -> str:
    """The text of one message's ``content``: a string, or the ``text`` parts of a multimodal list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


def head_tail(text: str, max_chars: int) -> str:
    """Keep the first two thirds and the last third of ``text`` when it is longer than ``max_chars``."""
    if len(text) <= max_chars:
        return text
    head = (max_chars * 2) // 3
    tail = max_chars - head - len(ELLIPSIS)
    return text[:head] + ELLIPSIS + (text[-tail:] if tail > 0 else "")


def _turns(messages: Iterable[Any], roles: tuple[str, ...]) -> list[str]:
    texts = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") in roles:
            text = content_text(message.get("content")).strip()
            if text:
                texts.append(text)
    return texts


def routing_text(
    messages: Sequence[Any], *, include_system: bool = False, max_chars: int = 4000
) -> str:
    """The text a router judges a conversation by."""
    user_turns = _turns(messages, ("user",))
    user_turns.reverse()
    pieces = [head_tail(user_turns[0], max_chars)] if user_turns else []
    pieces.extend(user_turns[1:])
    if include_system:
        pieces.extend(_turns(messages, ("system", "developer")))
    text = TURN_SEPARATOR.join(pieces)
    return text[:max_chars]


def prompt_text(prompt: str, *, max_chars: int = 4000) -> str:
    """The text for a bare prompt (training data, ``tiergate score`` lines with ``prompt``)."""
    return head_tail(prompt.strip(), max_chars)
