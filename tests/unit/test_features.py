"""routing_text: which parts of a conversation the router is shown, in what order, and how it is bounded."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from routers.features import ELLIPSIS, TURN_SEPARATOR, content_text, head_tail, routing_text


def turn(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def test_string_content_is_used_as_is() -> None:
    assert routing_text([turn("user", "What is 2+2?")]) == "What is 2+2?"


def test_only_text_parts_of_multimodal_content_count() -> None:
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "text", "text": "this picture"},
        {"type": "text", "text": 42},  # malformed part: ignored, not a crash
        "not-a-part",
    ]
    assert content_text(content) == "describe\nthis picture"
    assert routing_text([turn("user", content)]) == "describe\nthis picture"


def test_every_user_turn_counts_newest_first() -> None:
    messages = [turn("user", "first"), turn("assistant", "reply one"), turn("user", "second"),
                turn("assistant", "reply two"), turn("user", "third")]
    assert routing_text(messages) == TURN_SEPARATOR.join(["third", "second", "first"])


def test_assistant_and_tool_turns_are_left_out() -> None:
    messages = [turn("user", "question"), turn("assistant", "ANSWER"),
                {"role": "tool", "tool_call_id": "c1", "content": "TOOL OUTPUT"}]
    assert routing_text(messages) == "question"


def test_system_prompt_is_left_out_by_default_and_goes_last_when_included() -> None:
    messages = [turn("system", "SYSTEM"), turn("developer", "DEVELOPER"), turn("user", "question")]
    assert routing_text(messages) == "question"
    included = routing_text(messages, include_system=True)
    assert included == TURN_SEPARATOR.join(["question", "SYSTEM", "DEVELOPER"])


def test_conversation_without_user_text_scores_empty_text() -> None:
    assert routing_text([]) == ""
    assert routing_text([turn("user", "   "), turn("user", None), turn("assistant", "hi")]) == ""
    assert routing_text(["not a message", {"content": "no role"}, turn("user", {"odd": "shape"})]) == ""


def test_long_newest_turn_keeps_its_head_and_its_tail() -> None:
    document = "START " + "filler " * 2000 + "the actual QUESTION?"
    text = routing_text([turn("user", document)], max_chars=600)
    assert len(text) <= 600
    assert text.startswith("START")
    assert text.endswith("the actual QUESTION?")
    assert ELLIPSIS in text


def test_oldest_turns_are_the_ones_cut_when_too_long() -> None:
    messages = [turn("user", "OLDEST " + "x" * 300), turn("user", "NEWEST question")]
    text = routing_text(messages, max_chars=100)
    assert text.startswith("NEWEST question")
    assert len(text) == 100


def test_head_tail_leaves_short_text_alone() -> None:
    assert head_tail("short", 100) == "short"


@settings(max_examples=60, deadline=None)
@given(
    turns=st.lists(
        st.tuples(st.sampled_from(["user", "assistant", "system", "tool"]), st.text(max_size=300)), max_size=8
    ),
    max_chars=st.integers(min_value=16, max_value=500),
    include_system=st.booleans(),
)
def test_routing_text_never_exceeds_max_chars(turns: list[tuple[str, str]], max_chars: int,
                                              include_system: bool) -> None:
    messages = [turn(role, text) for role, text in turns]
    text = routing_text(messages, include_system=include_system, max_chars=max_chars)
    assert len(text) <= max_chars
    newest_user = next((t.strip() for r, t in reversed(turns) if r == "user" and t.strip()), "")
    if newest_user and len(newest_user) <= max_chars:
        assert text.startswith(newest_user)
