"""Generation for the local backend: ``model.generate`` with seeded sampling, stop strings and cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer


class TokenDecoder(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One request's decoding parameters, already validated and clamped."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_new_tokens (benchmarks)


@dataclass(slots=True)
class Generation:
    """What one decode produced; ``finish_reason`` is "stop", "length" or "cancelled"."""

    text: str = ""
    completion_tokens: int = 0
    finish_reason: str = "length"
    token_ids: list[int] = field(default_factory=list)


class StopText:
    """Turns generated token ids into text deltas, holding back anything that may be the start of a stop string.

    Decoding the whole sequence each time (cheap next to a forward pass) keeps multi-byte characters and
    tokenizer spacing right; a trailing U+FFFD means a character is still incomplete, so it waits.
    """

    def __init__(self, tokenizer: TokenDecoder, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Add one token; returns the text that is now safe to send (possibly empty)."""
        self.token_ids.append(token_id)
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        self.text = text
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            self.text = text[: min(hits)]
            return self._release(len(self.text))
        return self._release(len(text) - self._held_back(text))

    def flush(self) -> str:
        """The text still held back, once decoding has ended without a stop string."""
        return "" if self.stopped else self._release(len(self.text))

    def _held_back(self, text: str) -> int:
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, end: int) -> str:
        if end <= self.sent:
            return ""
        delta = self.text[self.sent : end]
        self.sent = end
        return delta


def make_generator(seed: int | None) -> torch.Generator:
    """A per-request generator: seeded requests repeat even while other requests sample concurrently."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class SeededSampling(LogitsProcessor):
    """Draws the next token with the request's own generator and leaves only that token possible.

    ``generate``'s own sampling draws from torch's global generator, shared by every request in the process,
    so a seeded request would not repeat while another samples. Greedy search over this processor's output
    picks exactly the drawn token; temperature and top_p are applied before it by the library's warpers.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        choice = torch.multinomial(torch.softmax(scores.float(), dim=-1), 1, generator=self.generator)
        only = torch.full_like(scores, float("-inf")).scatter_(-1, choice, 0.0)
        return only  # type: ignore[return-value]


def sampling_processors(params: SamplingParams, generator: torch.Generator,
                        constraint: LogitsProcessor | None = None) -> LogitsProcessorList:
    """Greedy when temperature is 0 (no processors), else temperature, nucleus (top_p), then a seeded draw;
    a grammar ``constraint`` masks the logits before any of them."""
    processors = LogitsProcessorList([constraint] if constraint is not None else [])
    if params.temperature > 1e-5:
        processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
        processors.append(SeededSampling(generator))
    return processors


class TextDeltas(BaseStreamer):
    """``generate``'s streamer: feeds each new token to :class:`StopText` and hands on the text that is safe."""

    def __init__(self, text: StopText, on_text: Callable[[str], None] | None) -> None:
        self._text = text
        self._on_text = on_text
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate hands the prompt over first
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            delta = self._text.add(int(token))
            if delta and self._on_text is not None:
                self._on_text(delta)

    def end(self) -> None:
        tail = self._text.flush()
        if tail and self._on_text is not None:
            self._on_text(tail)


class Halt(StoppingCriteria):
    """Stops generation once a stop string has appeared or the request was cancelled (client gone, shutdown)."""

    def __init__(self, text: StopText, cancel: threading.Event) -> None:
        self._text = text
        self._cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = self._text.stopped or self._cancel.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)  # type: ignore[return-value]


def generation_config(params: SamplingParams, eos_ids: frozenset[int], pad_id: int | None) -> GenerationConfig:
    """Every knob set explicitly: ``generate`` fills unset ones from the model's own generation config
    (Qwen2.5 ships sampling, top_k 20 and a repetition penalty), which would change what a request asked for."""
    eos = sorted(eos_ids)
    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=params.max_new_tokens,
        # vLLM's ignore_eos: the library's min-length processor masks end-of-sequence until the budget is spent.
        min_new_tokens=params.max_new_tokens if params.ignore_eos else 0,
        do_sample=False,  # sampling, when asked for, is SeededSampling's job (see there)
        num_beams=1,
        temperature=1.0,
        top_p=1.0,
        top_k=50,  # the library's neutral default: unused by greedy search, and anything else draws a warning
        repetition_penalty=1.0,
        eos_token_id=eos,
        pad_token_id=pad_id if pad_id is not None else (eos[0] if eos else None),
    )


def decode(
    model: Any,
    tokenizer: TokenDecoder,
    prompt_ids: list[int],
    params: SamplingParams,
    eos_ids: frozenset[int],
    cancel: threading.Event,
    generator: torch.Generator,
    on_text: Callable[[str], None] | None = None,
    pad_id: int | None = None,
    constraint: LogitsProcessor | None = None,
) -> Generation:
    """Generate one choice with ``model.generate``; ``on_text`` receives each text delta as soon as it is safe
    to send (from this worker thread)."""
    text = StopText(tokenizer, params.stop)
    if cancel.is_set():
        return Generation(finish_reason="cancelled")
    inputs = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.inference_mode():
        output = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            generation_config=generation_config(params, eos_ids, pad_id),
            logits_processor=sampling_processors(params, generator, constraint),
            stopping_criteria=StoppingCriteriaList([Halt(text, cancel)]),
            streamer=TextDeltas(text, on_text),
        )
    token_ids = [int(t) for t in output[0, len(prompt_ids):].tolist()]
    result = Generation(text=text.text, completion_tokens=len(token_ids), token_ids=token_ids)
    if cancel.is_set():
        result.finish_reason = "cancelled"
    elif text.stopped or (token_ids and token_ids[-1] in eos_ids and not params.ignore_eos):
        result.finish_reason = "stop"
    return result
