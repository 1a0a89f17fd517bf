"""Responses API <-> chat completions translation, and the typed stream events built from chat chunks."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidRequestError, UpstreamError
from gateway.responses.events import ChatToEvents
from gateway.responses.translate import from_chat, skeleton, to_chat


def test_items_become_chat_messages_with_tool_calls_merged_into_one_turn() -> None:
    body = {"model": "m", "instructions": "sys", "input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                        {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me see"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "reasoning", "summary": []},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
    ], "max_output_tokens": 7, "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}}}
    chat = to_chat(body, [])
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "tool"]
    assert chat["messages"][2]["content"] == "a\nb"
    assert [c["id"] for c in chat["messages"][3]["tool_calls"]] == ["c1", "c2"]
    assert chat["max_tokens"] == 7
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}, "strict": True}}


def test_images_stay_parts_and_unknown_items_are_400_only_when_strict() -> None:
    image = {"role": "user", "content": [{"type": "input_text", "text": "what"},
                                         {"type": "input_image", "image_url": "data:x", "detail": "low"}]}
    chat = to_chat({"model": "m", "input": [image]}, [])
    assert chat["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:x", "detail": "low"}}
    odd: dict[str, Any] = {"model": "m", "input": [{"type": "web_search_call", "id": "w"}],
                           "tools": [{"type": "web_search"}]}
    with pytest.raises(InvalidRequestError):
        to_chat(odd, [])
    assert to_chat(odd, [], strict=False)["messages"] == []


def test_chat_answer_becomes_a_response_with_status_and_usage() -> None:
    answer = {"model": "small-model", "choices": [{"finish_reason": "length", "message": {
        "role": "assistant", "content": "partial", "tool_calls": [
            {"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    response = from_chat({"model": "auto", "input": "x"}, answer, "resp_1", stored=True)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    assert response["output"][1]["call_id"] == "c9"
    assert response["usage"]["total_tokens"] == 7 and response["model"] == "small-model"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_chunks_become_ordered_typed_events() -> None:
    events = ChatToEvents(skeleton({"model": "m"}, "resp_1", "m", stored=False))
    out = events.start()
    for piece in (chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi "}), chunk({"content": "there"}),
                  chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}),
                  chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
                  chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                  chunk({}, "tool_calls"), {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}):
        out += events.feed(piece)
    out += events.end()
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    final = out[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hi there"
    assert final["output"][1]["arguments"] == '{"a":1}' and final["output"][1]["call_id"] == "c1"
    assert final["usage"]["output_tokens"] == 2


def test_failure_after_the_200_is_an_error_then_failed_event() -> None:
    events = ChatToEvents(skeleton({"model": "m"}, "resp_1", "m", stored=False))
    out = events.fail(UpstreamError("upstream dropped", kind="read"))
    assert [e["type"] for e in out] == ["error", "response.failed"]
    assert out[1]["response"]["error"]["message"] == "upstream dropped"
