"""A fast, scriptable fake OpenAI chat upstream (raw ASGI) for tests, benchmarks and offline demos."""

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


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
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
        record = Received(body, headers)
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
        elif body.get("stream"):
            await self._stream(send, receive, body, reply, record)
        else:
            await _send_json(send, 200, completion(body, reply.content), reply.headers)
        record.finished = True

    async def _stream(self, send: Send, receive: Receive, body: dict[str, Any], reply: Reply, rec: Received) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        watcher = asyncio.ensure_future(receive())
        try:
            for index, event in enumerate(stream_events(body, reply)):
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


def completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": str(body.get("model", "fake")),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(body, len(content.split())),
    }


def stream_events(body: dict[str, Any], reply: Reply) -> Iterator[bytes]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": str(body.get("model", "fake"))}
    words = reply.content.split()
    per_chunk = max(1, -(-len(words) // max(1, reply.chunks)))
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": " ".join(words[i : i + per_chunk]) + " "} for i in range(0, len(words), per_chunk)]
    for delta in deltas:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    final = {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    yield b"data: " + orjson.dumps(final) + b"\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(body, len(words))}) + b"\n\n"
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
