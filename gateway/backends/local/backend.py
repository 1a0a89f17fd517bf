"""A causal LM served in-process with transformers: bounded worker threads, a bounded wait queue, SSE chunks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jinja2 import TemplateError

from gateway.backends.base import ChatBody, ChatObject
from gateway.backends.local.generation import Generation, decode, make_generator
from gateway.backends.local.models import LOAD_LOCK, resolve_model_dir
from gateway.backends.local.request import LocalRequest, Shaper, message, parse_request, too_long
from gateway.backends.local.structured import (
    GrammarConstraint,
    GrammarTokenizer,
    available,
    json_grammar,
    tool_call_grammar,
)
from gateway.backends.local.tools import (
    CLOSE,
    OPEN,
    ToolCall,
    ToolCallText,
    bare_call,
    split_answer,
    supports_tools,
    template_message,
)
from gateway.errors import BackendOverloadedError, GatewayError, InvalidRequestError, UpstreamError
from gateway.settings import LocalBackend

_DONE = object()


class TransformersBackend:
    """Runs generation in ``max_concurrency`` worker threads; at most ``max_queue`` requests wait for one.

    A request beyond that gets :class:`BackendOverloadedError` (429 with ``Retry-After``). Closing a stream
    early sets the request's cancel flag; the worker stops before its next token and frees the slot.
    """

    def __init__(self, settings: LocalBackend, name: str = "transformers") -> None:
        self.name = name
        self.model = settings.model
        self.settings = settings
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos: frozenset[int] = frozenset()
        self._grammar: GrammarTokenizer | None = None
        self._template_tools = False
        self._executor = ThreadPoolExecutor(
            settings.max_concurrency, thread_name_prefix=f"tiergate-{name}", initializer=self._init_worker
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._waiting = 0
        self._running = 0
        self._cancels: set[threading.Event] = set()
        self._ready = False
        self._closed = False

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._ready = True

    def _load(self) -> None:
        import torch

        if self.settings.threads is not None:
            torch.set_num_threads(self.settings.threads)
        directory = resolve_model_dir(self.settings.path, self.settings.gguf_file, self.settings.cache_dir)
        with LOAD_LOCK:
            # Inside the lock too: transformers' lazy module is not safe to import from two threads at once.
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(directory))
            model: Any = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
        model.eval()
        if self.settings.quantize == "int8":
            from routers.classifier import quantize_int8  # the same dynamic int8 as the torch router's

            model = quantize_int8(model)
        self._model = model
        self._grammar = GrammarTokenizer(self._tokenizer)
        self._template_tools = supports_tools(self._tokenizer.chat_template)
        eos = model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        self._eos = frozenset(int(i) for i in ids)

    def _init_worker(self) -> None:
        # OpenMP's thread count is per calling thread: set it where generation runs, not only where loading did.
        if self.settings.threads is not None:
            import torch

            torch.set_num_threads(self.settings.threads)

    def ready(self) -> bool:
        return self._ready and not self._closed

    def queue_depth(self) -> int:
        """Requests waiting for a generation slot."""
        return self._waiting

    def in_flight(self) -> int:
        """Requests holding a generation slot."""
        return self._running

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def supports_tools(self) -> bool:
        """Whether the model's chat template renders tools (known once loaded)."""
        return self._template_tools

    def supports_json_schema(self) -> bool:
        return available()

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt's token ids after the model's chat template, ready to generate the assistant turn."""
        try:
            text = self._tokenizer.apply_chat_template([template_message(m) for m in messages], tools=tools or None,
                                                       tokenize=False, add_generation_prompt=True)
        except (TemplateError, ValueError) as exc:  # roles or orderings the template does not allow
            raise InvalidRequestError(
                f"messages do not fit this model's chat template: {exc}", param="messages"
            ) from exc
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    async def _prepare(self, body: ChatBody, stream: bool) -> tuple[LocalRequest, list[int], str | None]:
        """The request, its prompt ids and the grammar its output must follow (None: free text)."""
        if not self.ready():
            raise UpstreamError(f"local model {self.model} is not loaded yet", kind="not_ready", status=503)
        request = parse_request(body, self.settings, stream)
        if request.tools and not self._template_tools:
            raise InvalidRequestError(f"tools are not supported by the local model {self.model} (its chat "
                                      "template has no tool calling)", param="tools")
        ids = self.prompt_ids(request.messages, request.tools)
        if len(ids) > self.settings.max_input_tokens:
            raise too_long(len(ids), self.settings.max_input_tokens)
        grammar, param = None, "response_format"
        if request.tools and request.tool_choice != "auto":
            chosen = request.tools
            if isinstance(request.tool_choice, dict):
                name = (request.tool_choice.get("function") or {}).get("name")
                chosen = [t for t in request.tools if t["function"]["name"] == name]
            assert self._grammar is not None
            grammar, param = tool_call_grammar(chosen, self._grammar.terminal(OPEN), self._grammar.terminal(CLOSE)), \
                "tools"
        elif request.schema is not None:
            if not available():
                raise InvalidRequestError(f"response_format needs the llguidance package, which is not installed "
                                          f"beside the local model {self.model}", param="response_format")
            grammar = json_grammar(request.schema)
        if grammar is not None:
            assert self._grammar is not None
            await asyncio.to_thread(self._grammar.check, grammar, param)  # builds the vocabulary once, off the loop
        return request, ids, grammar

    async def _acquire(self) -> None:
        if self._slots.locked() and self._waiting >= self.settings.max_queue:
            raise BackendOverloadedError(
                f"local model {self.model} is busy: {self._running} generating, {self._waiting} waiting",
                headers={"Retry-After": "1"},
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1

    def _release(self, future: asyncio.Future[Any] | None = None) -> None:
        self._running -= 1
        self._slots.release()
        if future is not None and not future.cancelled():
            future.exception()  # retrieved here: a caller that left early never awaits it

    def _submit(self, work: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``work`` in a worker; the slot is freed when the worker finishes, not when the caller leaves."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        except RuntimeError:  # the executor was shut down by aclose()
            self._release()
            raise UpstreamError(f"local model {self.model} is shutting down", kind="not_ready", status=503) from None
        future.add_done_callback(self._release)
        return future

    def _generate(
        self,
        request: LocalRequest,
        ids: list[int],
        cancel: threading.Event,
        on_text: Callable[[str], None] | None = None,
        grammar: str | None = None,
    ) -> list[Generation]:
        generator = make_generator(request.params.seed)
        results = []
        for _ in range(request.n):
            constraint = None
            if grammar is not None:
                assert self._grammar is not None
                constraint = GrammarConstraint(self._grammar, grammar)  # parse state is per choice
            results.append(decode(self._model, self._tokenizer, ids, request.params, self._eos, cancel, generator,
                                  on_text, self._tokenizer.pad_token_id, constraint))
        return results

    async def complete(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> ChatObject:
        request, ids, grammar = await self._prepare(body, stream=False)
        await self._acquire()
        # A cancelled caller (client gone) stops the worker; shield keeps the slot held until it has.
        with self._generation() as cancel:
            future = self._submit(lambda: self._generate(request, ids, cancel, None, grammar))
            results: list[Generation] = await asyncio.shield(future)
        choices: list[tuple[str | dict[str, Any], str]] = []
        for result in results:
            if not request.tools:
                choices.append((result.text, result.finish_reason))
                continue
            content, calls = split_answer(result.text, {t["function"]["name"] for t in request.tools})
            reason = "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason
            choices.append((message(content, [call.openai() for call in calls]), reason))
        return Shaper(self.model).completion(choices, len(ids), sum(r.completion_tokens for r in results))

    async def stream(self, body: ChatBody, client_headers: dict[str, str] | None = None) -> AsyncIterator[ChatObject]:
        request, ids, grammar = await self._prepare(body, stream=True)
        await self._acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        with self._generation() as cancel:

            def push(item: object) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                    cancel.set()

            def work() -> list[Generation]:
                try:
                    return self._generate(request, ids, cancel, push, grammar)
                finally:
                    push(_DONE)

            shaper = Shaper(self.model)
            deltas = ToolDeltas({t["function"]["name"] for t in request.tools}) if request.tools else None
            future = self._submit(work)
            yield shaper.chunk({"role": "assistant", "content": "", "refusal": None})
            while (item := await queue.get()) is not _DONE:
                for delta in deltas.feed(item) if deltas is not None else [{"content": item}]:
                    yield shaper.chunk(delta)
            for delta in deltas.end() if deltas is not None else []:
                yield shaper.chunk(delta)
            result = (await future)[0]
            reason = result.finish_reason
            if deltas is not None and deltas.calls and reason == "stop":
                reason = "tool_calls"
            yield shaper.chunk({}, reason)
            yield shaper.usage_chunk(len(ids), result.completion_tokens)

    @contextlib.contextmanager
    def _generation(self) -> Iterator[threading.Event]:
        """One generation's cancel flag (set on exit, and by ``aclose``); failures become ``UpstreamError``."""
        cancel = threading.Event()
        self._cancels.add(cancel)
        try:
            yield cancel
        except GatewayError:
            raise
        except Exception as exc:
            raise UpstreamError(f"local generation failed: {exc}", kind="local") from exc
        finally:
            cancel.set()
            self._cancels.discard(cancel)

    async def aclose(self) -> None:
        self._closed = True
        for cancel in list(self._cancels):
            cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model = None


class ToolDeltas:
    """Generated text -> chat chunk deltas: content as it comes, each parsed tool call as two deltas (its id
    and name, then its arguments). Whitespace is held until it is known to belong to content; an answer
    that opens like a bare JSON call is held to the end (see local_tools.bare_call)."""

    def __init__(self, names: set[str]) -> None:
        self._text = ToolCallText()
        self._names = names
        self._pending = ""
        self._held: str | None = None  # a possible bare call, until the answer ends
        self._started = False
        self.calls = 0

    def feed(self, text: str) -> list[dict[str, Any]]:
        return self._deltas(self._text.feed(text))

    def end(self) -> list[dict[str, Any]]:
        out = self._deltas(self._text.end())
        if self._held is not None:
            held, self._held = self._held, None
            self._started = True
            call = bare_call(held, self._names)
            out += self._deltas([call] if call is not None else [held])
        return out

    def _deltas(self, items: list[str | ToolCall]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, ToolCall):
                self._pending = ""
                call = item.openai(self.calls)
                arguments = call["function"]["arguments"]
                call["function"]["arguments"] = ""
                out.append({"tool_calls": [call]})
                out.append({"tool_calls": [{"index": self.calls, "function": {"arguments": arguments}}]})
                self.calls += 1
            elif self._held is not None:
                self._held += item
            elif not item.strip():
                self._pending += item
            elif not self._started and not self.calls and item.lstrip().startswith(("{", "`")):
                self._held = self._pending + item
                self._pending = ""
            else:
                self._started = True
                out.append({"content": self._pending + item})
                self._pending = ""
        return out
