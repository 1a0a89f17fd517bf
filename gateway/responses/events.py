"""Chat completion chunks -> the Responses API's typed stream events, and their SSE encoding."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.responses.translate import finish, function_call_item, message_item, new_id

Event = dict[str, Any]


def encode(event: Event) -> bytes:
    """One SSE event, named by its ``type`` as the Responses API does (no ``[DONE]`` at the end)."""
    return b"event: " + str(event.get("type", "message")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ChatToEvents:
    """Feeds chat chunks in, takes Responses events out: one open output item at a time (the text message,
    then each tool call), each opened, filled with deltas and closed as the Responses API streams them."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.sequence = 0
        self.text: str | None = None  # the open message item's text so far
        self.text_id = ""
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> its function_call item
        self.open_call: int | None = None
        self.finish_reason: Any = None
        self.usage: Any = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self._snapshot()),
                self._event("response.in_progress", response=self._snapshot())]

    def _index(self) -> int:
        return len(self.response["output"])

    def _close_text(self) -> list[Event]:
        if self.text is None:
            return []
        index = self._index()
        item = message_item(self.text, None, self.text_id)
        part = item["content"][0]
        events = [self._event("response.output_text.done", item_id=self.text_id, output_index=index,
                              content_index=0, text=self.text, logprobs=[]),
                  self._event("response.content_part.done", item_id=self.text_id, output_index=index,
                              content_index=0, part=part),
                  self._event("response.output_item.done", output_index=index, item=item)]
        self.response["output"].append(item)
        self.text = None
        return events

    def _close_call(self) -> list[Event]:
        if self.open_call is None:
            return []
        item = self.calls[self.open_call]
        item["status"] = "completed"
        index = self._index()
        events = [self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                              name=item["name"], arguments=item["arguments"]),
                  self._event("response.output_item.done", output_index=index, item=dict(item))]
        self.response["output"].append(dict(item))
        self.open_call = None
        return events

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                events += self._text(content)
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, content: str) -> list[Event]:
        events: list[Event] = []
        if self.text is None:
            events += self._close_call()
            self.text, self.text_id = "", new_id("msg")
            index = self._index()
            item = message_item("", None, self.text_id, status="in_progress")
            item["content"] = []
            events.append(self._event("response.output_item.added", output_index=index, item=item))
            events.append(self._event("response.content_part.added", item_id=self.text_id, output_index=index,
                                      content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                             "logprobs": []}))
        self.text += content
        events.append(self._event("response.output_text.delta", item_id=self.text_id, output_index=self._index(),
                                  content_index=0, delta=content, logprobs=[]))
        return events

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        position = int(call.get("index", 0))
        if position not in self.calls:
            events += self._close_text() + self._close_call()
            item = function_call_item({"id": call.get("id"), "function": {
                "name": (call.get("function") or {}).get("name"), "arguments": ""}}, new_id("fc"), "in_progress")
            self.calls[position] = item
            self.open_call = position
            events.append(self._event("response.output_item.added", output_index=self._index(), item=dict(item)))
        item = self.calls[position]
        arguments = (call.get("function") or {}).get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=self._index(), delta=arguments))
        return events

    def end(self) -> list[Event]:
        events = self._close_text() + self._close_call()
        if not self.response["output"]:  # an empty answer is still one (empty) message
            events = self._text("") + self._close_text()
        finish(self.response, self.finish_reason, self.usage)
        kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        return events + [self._event(kind, response=self._snapshot())]

    def fail(self, error: GatewayError) -> list[Event]:
        """After the 200 went out: an ``error`` event, then ``response.failed``."""
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": error.message}
        return [self._event("error", code=error.code, message=error.message, param=error.param),
                self._event("response.failed", response=self._snapshot())]
