"""Tool calls in local model output: Hermes <tool_call> blocks, bare JSON calls, and their stream deltas."""

from __future__ import annotations

import json

from gateway.backends.local.backend import ToolDeltas
from gateway.backends.local.request import parse_request
from gateway.backends.local.tools import ToolCall, ToolCallText, split_answer, supports_tools, template_message
from gateway.settings import LocalBackend

NAMES = {"get_weather"}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_blocks_become_calls_and_the_rest_stays_content() -> None:
    content, calls = split_answer("Let me check.\n" + CALL + "\n" + CALL.replace("Paris", "Rome"), NAMES)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert split_answer("<tool_call>not json</tool_call>", NAMES) == ("<tool_call>not json</tool_call>", [])
    assert split_answer("plain answer", NAMES) == ("plain answer", [])


def test_a_bare_or_fenced_call_to_an_offered_tool_is_a_call() -> None:
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    assert split_answer(fenced, NAMES) == (None, [ToolCall("get_weather", '{"city": "Paris"}')])
    assert split_answer('{"name": "other", "arguments": {}}', NAMES)[1] == []  # not an offered tool


def test_tags_split_across_deltas_are_reassembled() -> None:
    parser = ToolCallText()
    items = []
    for piece in ["Sure", " <tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {}}\n</tool_", "call> ok"]:
        items += parser.feed(piece)
    items += parser.end()
    assert "".join(i for i in items if isinstance(i, str)) == "Sure  ok"
    assert [i for i in items if isinstance(i, ToolCall)] == [ToolCall("get_weather", "{}")]


def test_stream_deltas_name_then_arguments_and_keep_spaces_inside_content() -> None:
    deltas = ToolDeltas(NAMES)
    out = []
    for piece in ["Hello", " ", "world", "\n", CALL[:20], CALL[20:]]:
        out += deltas.feed(piece)
    out += deltas.end()
    assert out[0] == {"content": "Hello"} and out[1] == {"content": " world"}
    first, second = out[2]["tool_calls"][0], out[3]["tool_calls"][0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["function"] == {
        "name": "get_weather", "arguments": ""}
    assert second == {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    assert deltas.calls == 1


def test_a_held_bare_call_is_released_as_a_call_at_the_end() -> None:
    deltas = ToolDeltas(NAMES)
    out = deltas.feed('{"name": "get_weather", ') + deltas.feed('"arguments": {"city": "Oslo"}}')
    assert out == []
    out = deltas.end()
    assert out[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    not_a_call = ToolDeltas(NAMES)
    assert not_a_call.feed('{"answer": 42}') == [] and not_a_call.end() == [{"content": '{"answer": 42}'}]


def test_template_gets_arguments_as_objects_and_tools_are_parsed() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    assert template_message(message)["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert supports_tools("{% if tools %}<tool_call>{% endif %}") and not supports_tools("{{ messages }}")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    request = parse_request({"messages": [{"role": "user", "content": "x"}, message,
                                          {"role": "tool", "tool_call_id": "c", "content": "1"}],
                             "tools": tools, "tool_choice": "required",
                             "response_format": {"type": "json_object"}},
                            LocalBackend(model="m", path="p"), stream=False)
    assert request.tools == tools and request.tool_choice == "required" and request.schema == {"type": "object"}
    assert request.messages[2]["tool_call_id"] == "c"
