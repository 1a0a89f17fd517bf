"""Routing decision latency and throughput: the real micro-batching router, prompts of fixed token length."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from routers.base import decide
from routers.batcher import BatchingRouter
from routers.classifier import EncoderScorer

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


def prompt_of(tokens: int, index: int, scorer: EncoderScorer) -> str:
    """A distinct prompt of exactly ``tokens`` WordPiece tokens (so the decision cache never hits)."""
    words = [str(index), *(FILLER * (tokens // len(FILLER) + 2))]
    ids = scorer.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][: tokens - 2]
    return str(scorer.tokenizer.decode(ids))


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


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    quantize = {"auto": None, "int8": True, "none": False}[args.quantize]
    loaded: list[EncoderScorer] = []

    def load() -> EncoderScorer:
        # In the worker thread, as the gateway does: OpenMP keeps a thread team per calling thread, and a
        # model loaded on one thread and run on another measured about twice as slow here.
        scorer = EncoderScorer.load(args.model, max_length=args.max_length, threads=args.threads, quantize=quantize)
        loaded.append(scorer)
        return scorer

    router = BatchingRouter(
        load,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        queue_size=4096,
        cache_size=0,
    )
    await router.start()
    scorer = loaded[0]  # its tokenizer builds the prompts; torch stays on the worker thread
    rows = []
    try:
        for tokens in args.tokens:
            for concurrency in args.concurrency:
                n = args.requests if concurrency == 1 else args.requests * 4
                prompts = [prompt_of(tokens, i, scorer) for i in range(n + 8)]
                await run(router, prompts[:8], 1)  # warm-up
                result = await run(router, prompts[8:], concurrency)
                rows.append({"tokens": tokens, "concurrency": concurrency, "requests": n, **result})
                print(
                    f"{tokens:>7}{concurrency:>6}{n:>7}{result['p50_ms']:>10.1f}{result['p95_ms']:>10.1f}"
                    f"{result['per_s']:>11.0f}",
                    flush=True,
                )
    finally:
        await router.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=0, help="token cap (default: the checkpoint's)")
    parser.add_argument("--quantize", choices=("auto", "int8", "none"), default="auto", help="auto: the checkpoint's")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, nargs="+", default=[30, 128, 512])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=100, help="per cell at concurrency 1 (x4 above)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    print(f"{'tokens':>7}{'conc':>6}{'reqs':>7}{'p50 ms':>10}{'p95 ms':>10}{'decisions/s':>11}")
    rows = asyncio.run(main_async(args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
