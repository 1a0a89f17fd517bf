"""Added client latency of shadowing: the same gateway with ``learning.shadow_rate`` 0 and 1.0, in one run.

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/shadow_overhead.py [--duration 8] [--rounds 3]

Two fake upstreams (``tiergate fake-upstream``, instant or ``--latency`` answers; they also answer the
judge's prompts): one for the small tier, one for the large tier (shadow calls and the judge). The gateway
runs ``config/bench-fake.yaml`` (router ``always-small``, so the classifier is not measured), once with
learning off and once with ``shadow_rate: 1.0`` into a fresh SQLite store, alternating ``--rounds`` times.
Load: bench/loadgen.py at ``--concurrency`` (32), closed loop, JSON for ``--duration`` seconds, then
``--streams`` streams for time to first token. Medians over rounds are written to bench/RESULTS.md
(section "Shadowing overhead") with the shadow/judge counters of the last "on" run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import clean_env, free_port, spawn, stop, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "# Shadowing overhead: `bench/shadow_overhead.py`"
TIERGATE = str(Path(sys.executable).parent / "tiergate")


def loadgen(url: str, concurrency: int, duration: float, stream: bool, streams: int) -> dict[str, Any]:
    command = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url + "/v1/chat/completions",
               "--model", "tiergate-auto", "--concurrency", str(concurrency)]
    command += ["--stream", "--requests", str(streams)] if stream else ["--duration", str(duration)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 300).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def counters(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    found: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(tiergate_(?:shadow_requests|judge_verdicts|judge_failures|"
                                          r"labels_stored)_total)\{([^}]*)\} (\S+)$", text, re.M):
        found[f"{name}{{{labels}}}"] = float(value)
    return found


def measure(mode: str, small: str, large: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    env = clean_env({"TIERGATE_TIERS__SMALL__BASE_URL": small + "/v1",
                     "TIERGATE_TIERS__LARGE__BASE_URL": large + "/v1"})
    if mode == "on":
        env.update({"TIERGATE_LEARNING__SHADOW_RATE": "1.0",
                    "TIERGATE_LEARNING__STORE": str(workdir / f"labels-{time.time_ns()}.sqlite3"),
                    "TIERGATE_LEARNING__SHADOW_DAILY_BUDGET_USD": "1000",
                    "TIERGATE_LEARNING__JUDGE__DAILY_BUDGET_USD": "1000"})
    log = workdir / f"gateway-{mode}.log"
    process = spawn([TIERGATE, "serve", "--config", str(ROOT / "config" / "bench-fake.yaml"), "--port", str(port),
                     "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/readyz", process, time.monotonic(), 60, log)
        json_run = loadgen(url, args.concurrency, args.duration, False, 0)
        stream_run = loadgen(url, args.concurrency, 0, True, args.streams)
        time.sleep(1.0)  # let the background work finish before reading its counters
        return {"json": json_run, "stream": stream_run, "counters": counters(url)}
    finally:
        stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--streams", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.05],
                        help="upstream answer delays to measure, in seconds (0 = instant: the gateway saturates)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    # A timeout's SIGTERM must still stop the servers this script started (the finally blocks below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="tiergate-shadow-bench-"))
    sections = []
    for latency in args.latency:
        runs = measure_latency(latency, args, workdir)
        sections.append(render(runs, args, latency))
    report = "\n".join([header(args), *sections])
    print(report)
    if not args.no_write:
        write(report)
    return 0


def measure_latency(latency: float, args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    """Two fake upstreams: one for the answering small tier, one for the large tier (shadow calls and the judge),
    so the clients' upstream sees the same load with shadowing on and off."""
    processes = []
    urls = []
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    try:
        for name in ("small", "large"):
            port = free_port()
            log = workdir / f"upstream-{name}.log"
            processes.append(spawn([TIERGATE, "fake-upstream", "--port", str(port), "--latency", str(latency)],
                                   clean_env({}), log))
            urls.append(f"http://127.0.0.1:{port}")
            wait_ready(urls[-1] + "/v1/models", processes[-1], time.monotonic(), 30, log)
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                runs[mode].append(measure(mode, urls[0], urls[1], args, workdir))
                print(latency, mode, json.dumps(runs[mode][-1]), flush=True)
    finally:
        for process in processes:
            stop(process)
    return runs


def median(runs: list[dict[str, Any]], kind: str, key: str) -> float:
    return statistics.median(run[kind][key] for run in runs)


def header(args: argparse.Namespace) -> str:
    return "\n".join([
        SECTION, "",
        f"Measured on a shared 2-core machine ({platform.machine()}, Python {platform.python_version()}), "
        f"{datetime.now(UTC):%Y-%m-%d}, in one run: per upstream latency, {args.rounds} rounds alternating "
        f"off/on, each {args.duration:.0f} s of closed-loop JSON at concurrency {args.concurrency}, then "
        f"{args.streams} streams at the same concurrency. Gateway `config/bench-fake.yaml` (router `always-small`), "
        "two fake upstreams (`tiergate fake-upstream --latency S`): one for the small tier that answers, one "
        "for the large tier that gets the shadow calls and judges, so the clients' upstream sees the same "
        "load either way (all processes share the machine's 2 cores); \"on\" is "
        "`learning.shadow_rate: 1.0` with the default caps (4 concurrent shadow calls, queue 64, judge "
        "concurrency 2) into a fresh SQLite store. Medians over the rounds. Command: "
        "`flock /tmp/tiergate-bench.lock .venv/bin/python bench/shadow_overhead.py`.", ""])


def render(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, latency: float) -> str:
    rows = []
    for mode in ("off", "on"):
        r = runs[mode]
        errors = sum(x["json"]["errors"] + x["stream"]["errors"] for x in r)
        rows.append(f"| {mode} | {median(r, 'json', 'rps'):,.0f} | {median(r, 'json', 'p50_us') / 1000:.2f} ms | "
                    f"{median(r, 'json', 'p99_us') / 1000:.2f} ms | {median(r, 'stream', 'p50_us') / 1000:.2f} ms | "
                    f"{median(r, 'stream', 'p99_us') / 1000:.2f} ms | {errors} |")
    added = median(runs["on"], "json", "p50_us") - median(runs["off"], "json", "p50_us")
    added_ttft = median(runs["on"], "stream", "p50_us") - median(runs["off"], "stream", "p50_us")
    def spread(kind: str) -> float:
        values = [run[kind]["p50_us"] for run in runs["off"]]
        return (max(values) - min(values)) if len(values) > 1 else float("nan")

    last = runs["on"][-1]["counters"]
    shown = ", ".join(f"`{k}` {v:,.0f}" for k, v in sorted(last.items()) if v)
    title = "instant answers (the gateway saturates: worst case)" if not latency else \
        f"answers after {latency * 1000:.0f} ms (a stand-in for model time)"
    return "\n".join([
        f"## Upstream {title}", "",
        "| shadowing | JSON req/s | JSON p50 | JSON p99 | stream TTFT p50 | stream TTFT p99 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows, "",
        f"Added JSON p50: {added / 1000:+.2f} ms; added stream TTFT p50: {added_ttft / 1000:+.2f} ms; "
        f"spread of the \"off\" p50 between rounds (the noise): JSON {spread('json') / 1000:.2f} ms, stream TTFT "
        f"{spread('stream') / 1000:.2f} ms.", "",
        f"Background work in the last \"on\" run (from /metrics): {shown or 'none'}.", "",
    ])


def write(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION in text:
        start = text.index(SECTION)
        following = text.find("\n# ", start + len(SECTION))
        text = text[:start] + section + (text[following + 1:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
