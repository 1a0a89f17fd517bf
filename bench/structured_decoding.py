"""Tokens/s of the embedded models with and without grammar-constrained decoding (JSON schema), per engine.

Engines: ``none`` (free text, the same prompt), ``llguidance`` (what the gateway uses,
gateway.backends.local.structured) and ``xgrammar`` (its Hugging Face logits processor), each through
``local_generation.decode`` (``model.generate``), greedy, interleaved run by run so machine noise hits them alike.
xgrammar is not a dependency: ``uv pip install xgrammar`` before comparing it (it pulls in triton).
Decode tok/s = (tokens - 1) / (end - first text delta); free text runs to the same budget with ignore_eos.
Also prints the one-off cost of building each engine's view of the tokenizer and of compiling the schema.

    flock /tmp/tiergate-bench.lock python bench/structured_decoding.py --models smollm2 --runs 5 \
        --engines none llguidance xgrammar
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor  # noqa: E402

from gateway.backends.local.generation import SamplingParams, decode, make_generator  # noqa: E402
from gateway.backends.local.models import BUILTINS, prepare_builtin  # noqa: E402
from gateway.backends.local.structured import GrammarConstraint, GrammarTokenizer, json_grammar  # noqa: E402

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "country", "celsius", "summary"],
          "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "celsius": {"type": "integer"},
                         "summary": {"type": "string", "maxLength": 120}}}
PROMPT = [{"role": "user", "content": "Describe today's weather in Paris, France (21 degrees, sunny) as JSON with "
                                      "city, country, celsius and a one-sentence summary."}]


def load(name: str, threads: int) -> tuple[Any, Any]:
    torch.set_num_threads(threads)
    directory = prepare_builtin(name)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    return model, tokenizer


def xgrammar_factory(tokenizer: Any, vocab_size: int) -> tuple[Any, float]:
    import xgrammar as xgr
    from xgrammar.contrib.hf import LogitsProcessor as XGrammarProcessor

    started = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
    return (lambda: XGrammarProcessor(compiled)), time.perf_counter() - started


def llguidance_factory(tokenizer: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    grammar_tokenizer = GrammarTokenizer(tokenizer)
    grammar_tokenizer.get()
    grammar = json_grammar(SCHEMA)
    return (lambda: GrammarConstraint(grammar_tokenizer, grammar)), time.perf_counter() - started


def run_once(model: Any, tokenizer: Any, ids: list[int], constraint: LogitsProcessor | None,
             max_new_tokens: int) -> dict[str, Any]:
    eos = model.generation_config.eos_token_id
    eos_ids = frozenset(eos if isinstance(eos, list) else [eos])
    # Free text runs to the budget (ignore_eos), so both sides decode about as many tokens.
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, ignore_eos=constraint is None)
    stamps: list[float] = []
    started = time.perf_counter()
    result = decode(model, tokenizer, ids, params, eos_ids, threading.Event(), make_generator(0),
                    on_text=lambda _: stamps.append(time.perf_counter()), pad_id=tokenizer.pad_token_id,
                    constraint=constraint)
    ended = time.perf_counter()
    # Decode speed after the first token (the prompt's prefill is the same for every engine).
    seconds = ended - (stamps[0] if stamps else started)
    valid = True
    if constraint is not None:
        try:
            json.loads(result.text)
        except ValueError:
            valid = False
    return {"tokens": result.completion_tokens, "seconds": seconds, "total_seconds": ended - started,
            "tok_s": (result.completion_tokens - 1) / seconds if seconds else 0.0, "valid_json": valid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2"], choices=sorted(BUILTINS))
    parser.add_argument("--engines", nargs="+", default=["none", "llguidance"],
                        choices=["none", "llguidance", "xgrammar"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    for name in args.models:
        model, tokenizer = load(name, args.threads)
        text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        factories: dict[str, Any] = {"none": lambda: None}
        for engine in args.engines:
            if engine == "llguidance":
                factories[engine], setup = llguidance_factory(tokenizer)
            elif engine == "xgrammar":
                factories[engine], setup = xgrammar_factory(tokenizer, model.config.vocab_size)
            else:
                continue
            print(json.dumps({"model": name, "engine": engine, "setup_seconds": round(setup, 3)}))
        results: dict[str, list[dict[str, Any]]] = {engine: [] for engine in args.engines}
        run_once(model, tokenizer, ids, None, 8)  # warm-up
        for _ in range(args.runs):
            for engine in args.engines:
                measured = run_once(model, tokenizer, ids, factories[engine](), args.max_new_tokens)
                results[engine].append(measured)
                print(json.dumps({"model": name, "engine": engine, **measured}))
        print(f"\n{name}: median over {args.runs} runs, {args.threads} threads, greedy, <= {args.max_new_tokens} "
              "new tokens")
        for engine, runs in results.items():
            rate = statistics.median(run["tok_s"] for run in runs)
            tokens = statistics.median(run["tokens"] for run in runs)
            print(f"  {engine:<11} {rate:6.1f} tok/s  ({tokens:.0f} tokens, valid JSON "
                  f"{sum(run['valid_json'] for run in runs)}/{len(runs)})")


if __name__ == "__main__":
    main()
