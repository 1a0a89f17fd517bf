"""A fast, scriptable fake OpenAI upstream (raw ASGI: chat, Responses, embeddings, completions) for tests."""

from __future__ import annotations

import asyncio
import collections
import random
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Reply:
    """What the fake does with one request. Unscripted requests get ``Reply()``: an instant echo answer."""

    status: int = 200
    body: dict[str, Any] | None = None  # a JSON body to send instead of the generated answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line: longer than the read timeout = a hang
    chunks: int = 3  # content chunks in a stream
    chunk_delay: float = 0.0
    drop_after: int | None = None  # close the connection after this many stream chunks
    split_events: bool = False  # send each SSE event in two pieces, to exercise reassembly
    content: str = "Hello from the fake upstream."
    # Tool calls to answer instead of text: each {"name": ..., "arguments": "<json>"} and optionally "id".
    tool_calls: list[dict[str, str]] | None = None


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    path: str = ""
    disconnected: bool = False
    finished: bool = False


# How the judge prompts (config/judge/) frame the answers, as in MT-Bench: the fake judge finds them by these.
ANSWER_BLOCK = re.compile(r"\[The Start of Assistant( [AB])?'s Answer\]\n?(.*?)\n?\[The End of Assistant", re.S)


class FakeUpstream:
    """An OpenAI-compatible ``/v1/chat/completions`` that follows a script and records what it received.

    Unscripted requests are answered by ``answers[model]`` when set (two tiers on one fake answer
    distinguishably), and a request framing answers like the judge prompts is answered as a judge would:
    each answer scored by the first key of ``judge_scores`` it contains (else ``judge_default``), as
    ``{"score_a": .., "score_b": ..}`` for a pair or ``Rating: [[n]]`` (1-10) for a single answer.
    """

    def __init__(self) -> None:
        self.script: collections.deque[Reply] = collections.deque()
        self.by_model: dict[str, collections.deque[Reply]] = {}  # scripts per requested model, consulted first
        self.answers: dict[str, str] = {}
        self.judge_scores: dict[str, float] = {}
        self.judge_default = 0.5
        self.latency = 0.0  # seconds before every unscripted answer (a benchmark's stand-in for model time)
        self.received: list[Received] = []
        self.keep_received = True
        self.port = 0
        self.failure_rate = 0.0  # unscripted requests answered 500 at this rate (soak tests)
        self.random = random.Random(0)

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def push_for(self, model: str, *replies: Reply) -> None:
        """Script the replies to requests for ``model`` only (other models keep the shared script)."""
        self.by_model.setdefault(model, collections.deque()).extend(replies)

    def judge_reply(self, body: dict[str, Any]) -> str | None:
        """The fake judge's verdict when the last message frames answers like the judge prompts, else None."""
        messages = body.get("messages")
        last = messages[-1].get("content") if isinstance(messages, list) and messages else None
        if not isinstance(last, str) or "[The Start of Assistant" not in last:
            return None
        found = ANSWER_BLOCK.findall(last)
        scores = [self._score(answer) for _, answer in found]
        if len(found) >= 2 and found[0][0]:
            return f'Both answers considered.\n{{"score_a": {scores[0]}, "score_b": {scores[1]}}}'
        rating = round(1 + 9 * (scores[0] if scores else self.judge_default))
        return f"The answer is adequate. Rating: [[{rating}]]"

    def _score(self, answer: str) -> float:
        return next((v for k, v in self.judge_scores.items() if k in answer), self.judge_default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            await _send_json(send, 200, {"object": "list", "data": []}, {})
            return
        raw = b""
        more = True
        while more:
            message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        record = Received(body, headers, path)
        if self.keep_received:
            self.received.append(record)
        own = self.by_model.get(str(body.get("model")))
        if own:
            reply = own.popleft()
        elif self.script:
            reply = self.script.popleft()
        elif self.failure_rate and self.random.random() < self.failure_rate:
            reply = Reply(status=500)
        else:
            verdict = self.judge_reply(body)
            content = verdict if verdict is not None else self.answers.get(str(body.get("model")))
            reply = Reply(delay=self.latency) if content is None else Reply(content=content, delay=self.latency)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.body is not None or reply.status != 200:
            answer = reply.body or {"error": {"message": "scripted failure", "type": "server_error"}}
            await _send_json(send, reply.status, answer, reply.headers)
        elif path.endswith("/responses"):
            if body.get("stream"):
                await self._send_events(send, responses_events(body, reply), reply, record, receive)
            else:
                await _send_json(send, 200, responses_answer(body, reply), reply.headers)
        elif path.endswith("/embeddings"):
            await _send_json(send, 200, embeddings_answer(body), reply.headers)
        elif path.endswith("/completions") and not path.endswith("/chat/completions"):
            if body.get("stream"):
                await self._send_events(send, text_completion_events(body, reply), reply, record, receive)
            else:
                await _send_json(send, 200, text_completion(body, reply.content), reply.headers)
        elif body.get("stream"):
            await self._stream(send, receive, body, reply, record)
        else:
            await _send_json(send, 200, completion(body, reply.content, reply.tool_calls), reply.headers)
        record.finished = True

    async def _stream(self, send: Send, receive: Receive, body: dict[str, Any], reply: Reply, rec: Received) -> None:
        await self._send_events(send, stream_events(body, reply), reply, rec, receive)

    async def _send_events(self, send: Send, events: Iterator[bytes], reply: Reply, rec: Received,
                           receive: Receive) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        watcher = asyncio.ensure_future(receive())
        try:
            for index, event in enumerate(events):
                if reply.drop_after is not None and index >= reply.drop_after:
                    raise ConnectionAbortedError  # the server drops the connection mid-stream
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                if watcher.done() and watcher.result().get("type") == "http.disconnect":
                    rec.disconnected = True
                    return
                pieces = [event[: len(event) // 2], event[len(event) // 2 :]] if reply.split_events else [event]
                for piece in pieces:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            rec.disconnected = True
        finally:
            watcher.cancel()


async def _send_json(send: Send, status: int, payload: dict[str, Any], extra: dict[str, str]) -> None:
    data = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) + 3 for m in body.get("messages", []))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(body: dict[str, Any], content: str, tool_calls: list[dict[str, str]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["content"] = None
        message["tool_calls"] = [{"id": call.get("id") or f"call_fake{index}", "type": "function",
                                  "function": {"name": call["name"], "arguments": call["arguments"]}}
                                 for index, call in enumerate(tool_calls)]
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": str(body.get("model", "fake")),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": _usage(body, len(content.split())),
    }


def stream_events(body: dict[str, Any], reply: Reply) -> Iterator[bytes]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": str(body.get("model", "fake"))}
    words = reply.content.split()
    per_chunk = max(1, -(-len(words) // max(1, reply.chunks)))
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if reply.tool_calls:
        for index, call in enumerate(reply.tool_calls):
            half = len(call["arguments"]) // 2
            deltas.append({"tool_calls": [{"index": index, "id": call.get("id") or f"call_fake{index}",
                                           "type": "function", "function": {"name": call["name"], "arguments": ""}}]})
            for piece in (call["arguments"][:half], call["arguments"][half:]):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    else:
        deltas += [{"content": " ".join(words[i : i + per_chunk]) + " "} for i in range(0, len(words), per_chunk)]
    for delta in deltas:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    reason = "tool_calls" if reply.tool_calls else "stop"
    final = {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]}
    yield b"data: " + orjson.dumps(final) + b"\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(body, len(words))}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _input_words(body: dict[str, Any]) -> int:
    return len(orjson.dumps(body.get("input", "")).split()) + 3


def responses_answer(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """A Responses API ``response`` object: the reply's text as one message, or its tool calls."""
    output: list[dict[str, Any]] = []
    if reply.tool_calls:
        output = [{"type": "function_call", "id": f"fc_fake{index}", "call_id": call.get("id") or f"call_fake{index}",
                   "name": call["name"], "arguments": call["arguments"], "status": "completed"}
                  for index, call in enumerate(reply.tool_calls)]
    else:
        output = [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": reply.content, "annotations": [], "logprobs": []}]}]
    words = len(reply.content.split())
    prompt = _input_words(body)
    return {
        "id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": "completed",
        "completed_at": int(time.time()), "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model", "fake")), "output": output, "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True), "temperature": 1.0, "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []), "top_p": 1.0,
        "truncation": "disabled", "metadata": body.get("metadata") or {},
        "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": words,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + words},
    }


def responses_events(body: dict[str, Any], reply: Reply) -> Iterator[bytes]:
    """The Responses API's typed SSE events for ``responses_answer`` (no ``[DONE]``)."""
    final = responses_answer(body, reply)
    started = {**final, "status": "in_progress", "output": [], "completed_at": None}
    del started["usage"]
    events: list[dict[str, Any]] = [{"type": "response.created", "response": started},
                                    {"type": "response.in_progress", "response": started}]
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**item, "status": "in_progress", "content": []}})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append({"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                           "content_index": 0, "part": part})
            for word in reply.content.split(" "):
                events.append({"type": "response.output_text.delta", "item_id": item["id"], "output_index": index,
                               "content_index": 0, "delta": word + " ", "logprobs": []})
            events.append({"type": "response.output_text.done", "item_id": item["id"], "output_index": index,
                           "content_index": 0, "text": reply.content, "logprobs": []})
            events.append({"type": "response.content_part.done", "item_id": item["id"], "output_index": index,
                           "content_index": 0, "part": item["content"][0]})
        else:
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**item, "arguments": "", "status": "in_progress"}})
            events.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                           "output_index": index, "delta": item["arguments"]})
            events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                           "output_index": index, "name": item["name"], "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": final})
    for sequence, event in enumerate(events):
        event["sequence_number"] = sequence
        yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def embeddings_answer(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input", "")
    texts = given if isinstance(given, list) else [given]
    data = [{"object": "embedding", "index": index, "embedding": [0.1 * (index + 1), 0.2, -0.3]}
            for index in range(len(texts))]
    tokens = sum(len(str(text).split()) for text in texts)
    return {"object": "list", "data": data, "model": str(body.get("model", "fake")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def text_completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    prompt = len(str(body.get("prompt", "")).split())
    words = len(content.split())
    return {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": str(body.get("model", "fake")),
            "choices": [{"index": 0, "text": content, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}}


def text_completion_events(body: dict[str, Any], reply: Reply) -> Iterator[bytes]:
    answer = text_completion(body, reply.content)
    usage = answer.pop("usage")
    for word in reply.content.split(" "):
        chunk = {**answer, "choices": [{"index": 0, "text": word + " ", "logprobs": None, "finish_reason": None}]}
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    final = {**answer, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]}
    yield b"data: " + orjson.dumps(final) + b"\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + orjson.dumps({**answer, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


class ServerThread:
    """Runs an ASGI app with uvicorn on a loopback port-0 socket in a background thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", **config: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, 0))
        self.port: int = self.socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "on")
        self.server = uvicorn.Server(uvicorn.Config(app, **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread failed to start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


def serve_fake_upstream(host: str, port: int, failure_rate: float = 0.0, latency: float = 0.0) -> None:
    """``tiergate fake-upstream``: run the fake in the foreground (benchmarks, compose demo)."""
    fake = FakeUpstream()
    fake.keep_received = False
    fake.failure_rate = failure_rate
    fake.latency = latency
    uvicorn.run(fake, host=host, port=port, log_level="warning", access_log=False, http="httptools", loop="uvloop")
