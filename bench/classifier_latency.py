"""Routing decision latency and throughput: the real micro-batching router, prompts of fixed token length.

Runs each ``--runtimes`` entry (ONNX Runtime and torch by default) over the same prompts, one after the
other, and prints one side-by-side table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer

from routers.artifacts import TOKENIZER_FILE, builtin_dir, checkpoint_dir
from routers.base import Scorer, decide
from routers.batcher import BatchingRouter

FILLER = [
    "explain",
    "how",
    "the",
    "integral",
    "of",
    "a",
    "matrix",
    "valued",
    "function",
    "relates",
    "to",
    "the",
    "law",
    "of",
    "large",
    "numbers",
    "and",
    "why",
    "a",
    "court",
    "would",
    "consider",
    "the",
    "precedent",
    "when",
    "a",
    "contract",
    "is",
    "ambiguous",
    "about",
    "delivery",
    "dates",
]


def prompt_tokenizer(model: str) -> Tokenizer:
    """The checkpoint's Rust tokenizer (exported beside its ONNX graph), else the shipped default's vocabulary."""
    file = checkpoint_dir(model) / TOKENIZER_FILE
    return Tokenizer.from_file(str(file if file.is_file() else builtin_dir() / TOKENIZER_FILE))


def prompt_of(tokens: int, index: int, tokenizer: Tokenizer) -> str:
    """A distinct prompt of exactly ``tokens`` WordPiece tokens (so the decision cache never hits)."""
    words = [str(index), *(FILLER * (tokens // len(FILLER) + 2))]
    ids = tokenizer.encode(" ".join(words), add_special_tokens=False).ids[: tokens - 2]
    return str(tokenizer.decode(ids))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(router: BatchingRouter, prompts: Sequence[str], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(prompts)

    async def client() -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            decide(await router.score(text), 0.5)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "per_s": len(latencies) / elapsed,
    }


async def main_async(args: argparse.Namespace, runtime: str) -> list[dict[str, Any]]:
    quantize = {"auto": None, "int8": True, "none": False}[args.quantize]

    def load() -> Scorer:
        # In the worker thread, as the gateway does: OpenMP keeps a thread team per calling thread, and a
        # model loaded on one thread and run on another measured about twice as slow here.
        if runtime == "onnx":
            from routers.onnx_classifier import OnnxScorer

            return OnnxScorer.load(args.model, max_length=args.max_length, threads=args.threads)
        from routers.classifier import EncoderScorer

        return EncoderScorer.load(args.model, max_length=args.max_length, threads=args.threads, quantize=quantize)

    router = BatchingRouter(
        load,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        queue_size=4096,
        cache_size=0,
    )
    await router.start()
    tokenizer = prompt_tokenizer(args.model)
    rows = []
    try:
        for tokens in args.tokens:
            for concurrency in args.concurrency:
                n = args.requests if concurrency == 1 else args.requests * 4
                prompts = [prompt_of(tokens, i, tokenizer) for i in range(n + 8)]
                await run(router, prompts[:8], 1)  # warm-up
                result = await run(router, prompts[8:], concurrency)
                rows.append({"runtime": runtime, "tokens": tokens, "concurrency": concurrency, "requests": n, **result})
                print(
                    f"{runtime:>8}{tokens:>7}{concurrency:>6}{n:>7}{result['p50_ms']:>10.1f}{result['p95_ms']:>10.1f}"
                    f"{result['per_s']:>11.0f}",
                    flush=True,
                )
    finally:
        await router.aclose()
    return rows


def side_by_side(rows: Sequence[dict[str, Any]], runtimes: Sequence[str]) -> str:
    """One Markdown row per (tokens, concurrency): p50 and decisions/s of each runtime."""
    cells = {(r["runtime"], r["tokens"], r["concurrency"]): r for r in rows}
    head = "| tokens | concurrency | " + " | ".join(f"{rt} p50 ms | {rt} p95 ms | {rt} decisions/s" for rt in runtimes)
    lines = ["", head + " |", "|" + " ---: |" * (2 + 3 * len(runtimes))]
    for tokens, concurrency in dict.fromkeys((r["tokens"], r["concurrency"]) for r in rows):
        values = []
        for rt in runtimes:
            r = cells.get((rt, tokens, concurrency))
            values += [f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['per_s']:.0f}"] if r else ["", "", ""]
        lines.append(f"| {tokens} | {concurrency} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=0, help="token cap (default: the checkpoint's)")
    parser.add_argument("--runtimes", nargs="+", choices=("onnx", "torch"), default=["onnx", "torch"])
    parser.add_argument(
        "--quantize", choices=("auto", "int8", "none"), default="auto", help="torch: auto follows the checkpoint"
    )
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, nargs="+", default=[30, 128, 512])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=100, help="per cell at concurrency 1 (x4 above)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    print(f"{'runtime':>8}{'tokens':>7}{'conc':>6}{'reqs':>7}{'p50 ms':>10}{'p95 ms':>10}{'decisions/s':>11}")
    rows = [row for runtime in args.runtimes for row in asyncio.run(main_async(args, runtime))]
    print(side_by_side(rows, args.runtimes))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
