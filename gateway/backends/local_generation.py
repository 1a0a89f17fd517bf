"""The token-by-token decode loop of the local backend: sampling, stop strings, cancellation (runs in a thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


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


def pick_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Greedy when temperature is 0, else temperature and nucleus (top_p) sampling."""
    if params.temperature <= 1e-5:
        return int(torch.argmax(logits).item())
    scaled = logits.float() / params.temperature
    if params.top_p < 1.0:
        ordered, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the best token).
        outside = torch.cumsum(probs, dim=-1) - probs > params.top_p
        ordered = ordered.masked_fill(outside, float("-inf"))
        choice = torch.multinomial(torch.softmax(ordered, dim=-1), 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator).item())


def decode(
    model: Any,
    tokenizer: TokenDecoder,
    prompt_ids: list[int],
    params: SamplingParams,
    eos_ids: frozenset[int],
    cancel: threading.Event,
    generator: torch.Generator,
    on_text: Callable[[str], None] | None = None,
) -> Generation:
    """Generate one choice with a KV cache, one forward pass per token, checking ``cancel`` before each.

    ``on_text`` receives each text delta as soon as it is safe to send (from this worker thread).
    """
    text = StopText(tokenizer, params.stop)
    result = Generation()
    past: Any = None
    inputs = torch.tensor([prompt_ids], dtype=torch.long)
    with torch.inference_mode():
        while result.completion_tokens < params.max_new_tokens:
            if cancel.is_set():
                result.finish_reason = "cancelled"
                break
            out = model(input_ids=inputs, past_key_values=past, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            token = pick_token(out.logits[0, -1], params, generator)
            result.completion_tokens += 1
            result.token_ids.append(token)
            if token in eos_ids and not params.ignore_eos:
                result.finish_reason = "stop"
                break
            delta = text.add(token)
            if delta and on_text is not None:
                on_text(delta)
            if text.stopped:
                result.finish_reason = "stop"
                break
            inputs = torch.tensor([[token]], dtype=torch.long)
    tail = text.flush()
    if tail and on_text is not None:
        on_text(tail)
    result.text = text.text
    return result
