"""The pin store (LRU + TTL) and the keys a conversation or a tool loop is recognised by."""

from __future__ import annotations

from gateway.conversations.keys import answered_tool_calls, conversation_key, issued_tool_calls
from gateway.conversations.pins import MemoryPinStore
from gateway.settings import ConversationSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_pins_expire_after_their_ttl() -> None:
    clock = Clock()
    pins = MemoryPinStore(10, clock)
    await pins.put("a", "small", 5.0)
    clock.now = 4.9
    assert await pins.get("a") == "small"
    clock.now = 5.0
    assert await pins.get("a") is None
    assert len(pins) == 0


async def test_pin_table_is_bounded_and_drops_the_least_recently_used() -> None:
    pins = MemoryPinStore(2, Clock())
    await pins.put("a", "small", 60)
    await pins.put("b", "large", 60)
    assert await pins.get("a") == "small"  # now b is the least recently used
    await pins.put("c", "large", 60)
    assert len(pins) == 2
    assert await pins.get("b") is None
    assert await pins.get("a") == "small" and await pins.get("c") == "large"


def test_only_a_trailing_tool_result_continues_a_tool_loop() -> None:
    call = {"role": "assistant", "tool_calls": [{"id": "c1"}, {"id": "c2"}]}
    loop = [{"role": "user", "content": "x"}, call, {"role": "tool", "tool_call_id": "c1"},
            {"role": "tool", "tool_call_id": "c2"}]
    assert answered_tool_calls(loop) == ["c2", "c1"]
    assert answered_tool_calls([*loop, {"role": "user", "content": "next"}]) == []
    assert answered_tool_calls("nonsense") == []


def test_issued_tool_calls_from_answers_and_chunks() -> None:
    answer = {"choices": [{"message": {"tool_calls": [{"id": "a"}, {"id": "b"}]}}]}
    chunk = {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c"}]}}]}
    args_only = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]}
    assert issued_tool_calls(answer) == ["a", "b"]
    assert issued_tool_calls(chunk) == ["c"]
    assert issued_tool_calls(args_only) == []


def test_conversation_key_takes_the_first_configured_source() -> None:
    settings = ConversationSettings(keys=["session", "metadata", "user", "hash"])
    body = {"user": "u", "metadata": {"session_id": "m"}, "messages": [{"role": "user", "content": "hi"}]}
    assert conversation_key(body, {"x-tiergate-session": "s"}, settings) == "conv:session:s"
    assert conversation_key(body, {}, settings) == "conv:metadata:m"
    assert conversation_key({**body, "metadata": {}}, {}, settings) == "conv:user:u"
    hashed = conversation_key({"messages": body["messages"]}, {}, settings)
    assert hashed is not None and hashed.startswith("conv:hash:")
    assert conversation_key({"user": "u"}, {}, ConversationSettings(keys=[])) is None


def test_opening_hash_is_the_same_on_every_later_turn() -> None:
    settings = ConversationSettings(keys=["hash"])
    opening = [{"role": "system", "content": "terse"}, {"role": "user", "content": "q1"}]
    later = [*opening, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    other = [{"role": "system", "content": "terse"}, {"role": "user", "content": "another"}]
    key = conversation_key({"messages": opening}, {}, settings)
    assert key == conversation_key({"messages": later}, {}, settings)
    assert key != conversation_key({"messages": other}, {}, settings)
