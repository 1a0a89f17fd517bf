"""Closed-loop HTTP load generator (aiohttp, one process): JSON throughput/latency and streaming time to first token.

bench/overhead.py runs it pinned to its own core. JSON throughput normally comes from ``wrk`` (C, far
cheaper per request); this module is the fallback when wrk is missing and the only tool for streaming, where
the time to the first content chunk is what users feel.

Prints one JSON object on stdout:
``{"requests", "errors", "duration_s", "rps", "p50_us", "p90_us", "p99_us", "mean_us", "max_us"}``;
in stream mode the latencies are times to the first non-empty ``delta.content`` and ``total_p50_us`` /
``total_p99_us`` are added for the whole stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarize(latencies_s: list[float], errors: int, duration_s: float) -> dict[str, Any]:
    values = sorted(x * 1e6 for x in latencies_s)
    return {
        "requests": len(values),
        "errors": errors,
        "duration_s": duration_s,
        "rps": len(values) / duration_s if duration_s else 0.0,
        "p50_us": percentile(values, 50),
        "p90_us": percentile(values, 90),
        "p99_us": percentile(values, 99),
        "mean_us": sum(values) / len(values) if values else float("nan"),
        "max_us": values[-1] if values else float("nan"),
    }


def _first_content(line: bytes) -> bool:
    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
        return False
    try:
        event = json.loads(line[6:])
    except ValueError:
        return False
    for choice in event.get("choices") or []:
        if (choice.get("delta") or {}).get("content"):
            return True
    return False


async def _json_worker(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], stop_at: float,
    latencies: list[float], errors: list[int],
) -> None:
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - start)
        else:
            errors[0] += 1


async def _stream_worker(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], remaining: list[int],
    ttft: list[float], totals: list[float], errors: list[int],
) -> None:
    while remaining[0] > 0:
        remaining[0] -= 1
        start = time.perf_counter()
        first: float | None = None
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    await response.read()
                    errors[0] += 1
                    continue
                async for line in response.content:
                    if first is None and _first_content(line):
                        first = time.perf_counter() - start
        except aiohttp.ClientError:
            errors[0] += 1
            continue
        if first is None:
            errors[0] += 1
            continue
        ttft.append(first)
        totals.append(time.perf_counter() - start)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_tokens": 16,
    }
    if args.stream:
        payload["stream"] = True
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {args.api_key}"}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.stream:
            ttft: list[float] = []
            totals: list[float] = []
            errors = [0]
            remaining = [args.warmup_requests]
            await asyncio.gather(*(_stream_worker(session, args.url, body, headers, remaining, [], [], [0])
                                   for _ in range(args.concurrency)))
            remaining = [args.requests]
            started = time.perf_counter()
            await asyncio.gather(*(_stream_worker(session, args.url, body, headers, remaining, ttft, totals, errors)
                                   for _ in range(args.concurrency)))
            result = summarize(ttft, errors[0], time.perf_counter() - started)
            totals.sort()
            result["total_p50_us"] = percentile([t * 1e6 for t in totals], 50)
            result["total_p99_us"] = percentile([t * 1e6 for t in totals], 99)
            return result
        latencies: list[float] = []
        errors = [0]
        if args.warmup > 0:
            stop = time.perf_counter() + args.warmup
            await asyncio.gather(*(_json_worker(session, args.url, body, headers, stop, [], [0])
                                   for _ in range(args.concurrency)))
        started = time.perf_counter()
        stop = started + args.duration
        await asyncio.gather(*(_json_worker(session, args.url, body, headers, stop, latencies, errors)
                               for _ in range(args.concurrency)))
        return summarize(latencies, errors[0], time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="full URL of /v1/chat/completions")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--api-key", default="fake")
    parser.add_argument("--prompt", default="Say hello.")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measurement (JSON mode)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first (JSON mode)")
    parser.add_argument("--stream", action="store_true", help="measure time to first token of SSE streams")
    parser.add_argument("--requests", type=int, default=300, help="measured streams (stream mode)")
    parser.add_argument("--warmup-requests", type=int, default=30, help="unmeasured streams (stream mode)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
