"""Tokens/s and time to first token of the embedded models: raw decode loop, backend stream, gateway SSE.

For each model (SmolLM2-135M, Qwen2.5-Coder-0.5B) and precision (fp32, int8) on ``--threads`` CPU threads:

- ``raw``: the backend's generation (``local_generation.decode``: ``model.generate`` with a streamer and stopping
  criteria), the model's own speed;
- ``loop``: a hand-written greedy KV-cache loop (one forward per token, what the backend ran before it used
  ``generate``), so the library's per-step overhead is measured rather than assumed;
- ``backend``: ``TransformersBackend.stream`` in-process (worker thread + asyncio bridge + chunk shaping);
- ``gateway``: ``tiergate serve`` in a subprocess, ``/v1/chat/completions`` with ``stream: true`` over SSE.

The three are interleaved run by run (only one generates at a time) so machine noise hits them alike.
Prints one JSON line per measurement and a summary table; ``--json`` writes everything to a file.
Decode tok/s = (completion_tokens - 1) / (time of last token - time of first token).

    python bench/local_models.py --models smollm2 --precisions fp32 int8 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# libgomp's default spin-waiting between parallel regions collapses throughput (about 5x here) when the CPU
# is shared with other processes; passive waiting costs little on an idle box. Must precede ``import torch``;
# the gateway subprocess inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from gateway.backends.local.backend import TransformersBackend  # noqa: E402
from gateway.backends.local.generation import SamplingParams, decode, make_generator  # noqa: E402
from gateway.settings import LocalBackend  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from local_gateway import PROMPT, Gateway, rate, run_gateway  # noqa: E402

MODELS = {"smollm2": "builtin:smollm2", "qwen": "builtin:qwen2.5-coder-0.5b"}


def settings_for(model: str, precision: str, threads: int, max_tokens: int) -> LocalBackend:
    return LocalBackend(
        model=f"{model}-{precision}",
        path=MODELS[model],
        quantize="int8" if precision == "int8" else "none",
        threads=threads,
        max_new_tokens=max_tokens,
        max_queue=4,
    )


def run_loop(backend: TransformersBackend, max_tokens: int) -> dict[str, float]:
    """A hand-written greedy decode with a KV cache, one forward pass per token: the reference for ``raw``."""
    model = backend._model
    inputs = torch.tensor([backend.prompt_ids(PROMPT)], dtype=torch.long)
    cache: Any = None
    times: list[float] = []
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(max_tokens):
            out = model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            token = int(torch.argmax(out.logits[0, -1]).item())
            times.append(time.perf_counter())
            inputs = torch.tensor([[token]], dtype=torch.long)
    return {"ttft_s": times[0] - start, "tok_s": rate(len(times), times[0], times[-1]), "tokens": len(times)}


def run_model(backend: TransformersBackend, max_tokens: int) -> dict[str, float]:
    """The backend's generation on its loaded weights: no threads, no asyncio, no chunks."""
    ids = backend.prompt_ids(PROMPT)
    times: list[float] = []
    start = time.perf_counter()
    params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    result = decode(
        backend._model,
        backend.tokenizer,
        ids,
        params,
        backend._eos,
        threading.Event(),
        make_generator(0),
        lambda _: times.append(time.perf_counter()),
    )
    return {
        "ttft_s": times[0] - start,
        "tok_s": rate(result.completion_tokens, times[0], times[-1]),
        "tokens": result.completion_tokens,
    }


async def run_backend(backend: TransformersBackend, max_tokens: int) -> dict[str, float]:
    body = {"messages": PROMPT, "temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}
    start = time.perf_counter()
    times: list[float] = []
    tokens = 0
    async for chunk in backend.stream(body):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            times.append(time.perf_counter())
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    return {"ttft_s": times[0] - start, "tok_s": rate(tokens, times[0], times[-1]), "tokens": tokens}


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


async def bench_variant(model: str, precision: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = settings_for(model, precision, args.threads, args.max_tokens)
    backend = TransformersBackend(settings, name="bench")
    started = time.perf_counter()
    await backend.start()
    load_s = time.perf_counter() - started
    await run_backend(backend, 4)  # warm-up: first-call allocations and kernel selection
    results: dict[str, list[dict[str, float]]] = {"raw": [], "loop": [], "backend": []}
    # The bare loop gets a thread configured like the backend's workers (OpenMP threads are per thread).
    raw_thread = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(args.threads,))
    loop = asyncio.get_running_loop()
    gateway = Gateway(settings, workdir) if args.gateway else None
    client = await gateway.__aenter__() if gateway is not None else None
    try:
        if client is not None:
            results["gateway"] = []
            await run_gateway(client, settings.model, 4)
        for round_ in range(args.runs):
            order = list(results)
            # Rotate which path goes first, so load drifting during a round does not favour one path.
            for path in order[round_ % len(order) :] + order[: round_ % len(order)]:
                if path == "raw":
                    row = await loop.run_in_executor(raw_thread, run_model, backend, args.max_tokens)
                elif path == "loop":
                    row = await loop.run_in_executor(raw_thread, run_loop, backend, args.max_tokens)
                elif path == "backend":
                    row = await run_backend(backend, args.max_tokens)
                else:
                    assert client is not None
                    assert gateway is not None and gateway.process is not None
                    row = await run_gateway(client, settings.model, args.max_tokens, gateway.process.pid)
                results[path].append(row)
    finally:
        if gateway is not None:
            await gateway.__aexit__()
        await backend.aclose()
        raw_thread.shutdown()
    summary: dict[str, Any] = {
        "model": model,
        "precision": precision,
        "threads": args.threads,
        "load_s": load_s,
    }
    for path, rows in results.items():
        summary[path] = {
            "tok_s": median(rows, "tok_s"),
            "ttft_s": median(rows, "ttft_s"),
            "tokens": median(rows, "tokens"),
            "runs": rows,
        }
    if "gateway" in summary:
        summary["gateway_cost_pct"] = 100 * (1 - summary["gateway"]["tok_s"] / summary["raw"]["tok_s"])
        # Same-round ratios cancel the machine's slow drifts better than a ratio of medians.
        paired = [g["tok_s"] / r["tok_s"] for g, r in zip(results["gateway"], results["raw"], strict=True)]
        summary["gateway_cost_pct_paired"] = 100 * (1 - statistics.median(paired))
        loop_ms = median(results["gateway"], "loop_ms_per_token")
        summary["gateway_loop_ms_per_token"] = loop_ms
        # Event-loop CPU per token over the model's own time per token: the streaming path's share of the
        # CPU, independent of how busy the machine was while measuring.
        summary["gateway_loop_cost_pct"] = 100 * loop_ms / (1000 / summary["raw"]["tok_s"])
    print(json.dumps(summary), flush=True)
    return summary


def table(summaries: list[dict[str, Any]]) -> str:
    lines = ["model    prec  load_s  path     tok/s   ttft_ms  tokens"]
    for s in summaries:
        for path in ("raw", "loop", "backend", "gateway"):
            if path in s:
                r = s[path]
                lines.append(
                    f"{s['model']:<8} {s['precision']:<5} {s['load_s']:6.1f}  {path:<8} "
                    f"{r['tok_s']:6.1f}  {1000 * r['ttft_s']:7.0f}  {r['tokens']:6.0f}"
                )
        if "gateway_cost_pct" in s:
            lines.append(
                f"{'':<8} {'':<5} {'':6}  gateway streaming cost: {s['gateway_cost_pct']:+.1f}% of tok/s "
                f"(median of paired rounds {s['gateway_cost_pct_paired']:+.1f}%)"
            )
            lines.append(
                f"{'':<8} {'':<5} {'':6}  gateway event loop: {s['gateway_loop_ms_per_token']:.2f} ms CPU/token "
                f"= {s['gateway_loop_cost_pct']:.1f}% of the model's time per token"
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    summaries = []
    with tempfile.TemporaryDirectory(prefix="tiergate-bench-") as workdir:
        for model in args.models:
            for precision in args.precisions:
                summaries.append(await bench_variant(model, precision, args, Path(workdir)))
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-gateway", dest="gateway", action="store_false", help="direct numbers only")
    parser.add_argument("--json", type=Path, help="also write the summaries to this file")
    args = parser.parse_args(argv)
    summaries = asyncio.run(main_async(args))
    print(table(summaries))
    if args.json is not None:
        args.json.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
