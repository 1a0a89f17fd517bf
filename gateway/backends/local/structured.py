"""Grammar-constrained decoding for the local backend with llguidance: JSON schemas and forced tool calls.

llguidance was chosen by measurement (bench/structured_decoding.py, bench/RESULTS.md): it decoded at least as
fast as xgrammar on this CPU-only path, and it needs no triton (xgrammar pulls in ~1 GB).
"""

from __future__ import annotations

import json
import threading
import warnings
from typing import Any

import numpy
import torch
from transformers import LogitsProcessor

from gateway.errors import InvalidRequestError

# Compact JSON: a tiny model given free whitespace may emit newlines until its token budget is spent.
JSON_DEFAULTS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def available() -> bool:
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


def json_grammar(schema: dict[str, Any], param: str = "response_format") -> str:
    """A grammar for JSON matching ``schema``; a schema llguidance cannot compile is the client's 400."""
    import llguidance

    try:
        grammar: str = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_DEFAULTS)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"unsupported JSON schema: {exc}", param=param) from None
    return grammar


def lark_grammar(text: str) -> str:
    import llguidance

    grammar: str = llguidance.LLMatcher.grammar_from_lark(text)
    return grammar


def tool_call_grammar(tools: list[dict[str, Any]], open_tag: str, close_tag: str) -> str:
    """Exactly one ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` for one of ``tools``; the tags
    are grammar terminals (``<[id]>`` for a single special token, else a quoted string)."""
    options = []
    for tool in tools:
        function = tool.get("function") or {}
        parameters = function.get("parameters") or {"type": "object"}
        options.append({"type": "object", "properties": {"name": {"const": function.get("name")},
                                                          "arguments": parameters},
                        "required": ["name", "arguments"], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    body = json.dumps({**schema, "x-guidance": JSON_DEFAULTS})
    return lark_grammar(f'start: {open_tag} "\\n" call "\\n" {close_tag}\ncall: %json {body}\n')


class GrammarTokenizer:
    """llguidance's view of one Hugging Face tokenizer, built once (a second or so for a 150k vocabulary)."""

    def __init__(self, tokenizer: Any) -> None:
        self._hf = tokenizer
        self._built: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._built is None:
                import llguidance.hf

                self._built = llguidance.hf.from_tokenizer(self._hf)
            return self._built

    def terminal(self, text: str) -> str:
        """A grammar terminal for ``text``: the token itself when the tokenizer has it as one added token."""
        token_id = self._hf.convert_tokens_to_ids(text)
        if isinstance(token_id, int) and token_id != self._hf.unk_token_id and text in self._hf.get_added_vocab():
            return f"<[{token_id}]>"
        return json.dumps(text)

    def check(self, grammar: str, param: str) -> None:
        import llguidance

        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.get())
        if is_error:
            raise InvalidRequestError(f"cannot constrain decoding to this schema: {'; '.join(messages)}",
                                      param=param)


class GrammarConstraint(LogitsProcessor):
    """Masks every token the grammar does not allow next; one per generated choice (it keeps parse state)."""

    def __init__(self, tokenizer: GrammarTokenizer, grammar: str) -> None:
        import llguidance

        with warnings.catch_warnings():
            # llguidance.torch decorates a helper (not used here) with torch.jit.script, which torch deprecates.
            warnings.simplefilter("ignore", DeprecationWarning)
            import llguidance.torch

        built = tokenizer.get()
        self._matcher = llguidance.LLMatcher(built, grammar)
        self._fill = llguidance.torch.fill_next_token_bitmask
        self._bitmask = llguidance.torch.allocate_token_bitmask(1, built.vocab_size)
        self._prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
        else:
            self._matcher.consume_token(int(input_ids[0, -1]))
        self._fill(self._matcher, self._bitmask, 0)
        # Unpacked with numpy rather than llguidance.torch.apply_token_bitmask_inplace, a torch.jit.script
        # function that takes seconds to compile on first use; numpy's unpackbits costs well under 1 ms.
        bits = numpy.unpackbits(self._bitmask.numpy().view(numpy.uint8), bitorder="little")
        width = scores.shape[-1]
        if bits.shape[0] < width:  # logits beyond the tokenizer's vocabulary (padding rows): never allowed
            bits = numpy.pad(bits, (0, width - bits.shape[0]))
        scores[0].masked_fill_(torch.from_numpy(bits[:width] == 0), float("-inf"))
        return scores

    def finished(self) -> bool:
        return bool(self._matcher.is_stopped() or self._matcher.is_accepting())
