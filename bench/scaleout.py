"""Scale-out benchmark: pass-through throughput with 1 and 2 workers, and the latency Redis adds per request.

    flock /tmp/tiergate-bench.lock python bench/scaleout.py            # prints a Markdown section

Part 1 runs ``tiergate serve --workers N`` (config/bench-fake.yaml: router always-small, no model) in front
of ``tiergate fake-upstream`` and drives it with ``wrk`` (or bench/loadgen.py when wrk is missing) at
``--concurrency``; the gateway workers, the fake upstream and the load generator all share this machine's
cores, so the ratio, not the absolute numbers, is the result. Part 2 runs one worker with an API key, a
requests-per-minute limit and a daily budget (so every request makes the limiter's and the budget's Redis
round trips) at concurrency 1, with ``state.backend: memory`` and then ``redis`` (a local redis-server),
and reports p50/p99 of each and their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
KEY = "tg-bench-key"
PROMPT = "Say hello."
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def gateway(workdir: Path, upstream: str, workers: int, extra: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    from gateway.admission.auth import hash_key

    port = free_port()
    config = yaml.safe_load((REPO / "config" / "bench-fake.yaml").read_text())
    for tier in config["tiers"].values():
        tier["base_url"] = upstream + "/v1"
    config["server"] = {"host": "127.0.0.1", "port": port, "load_before_serving": True}
    config["prices_file"] = str(REPO / "config" / "prices.yaml")
    config["auth"] = {"keys": [{"name": "bench", "hash": hash_key(KEY)}]}
    config.update(extra)
    path = workdir / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    log = (workdir / f"gateway-{port}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                "--workers", str(workers), "--log-level", "warning"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", process)
    return process, url


def load(url: str, concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16})
    chat = url + "/v1/chat/completions"
    if shutil.which("wrk") and concurrency > 1:
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT % {"body": body, "key": KEY})
        subprocess.run(["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", str(script), chat], check=True,
                       capture_output=True, timeout=60)
        done = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--timeout", "30s",
                               "-s", str(script), chat], check=True, capture_output=True, text=True,
                              timeout=duration + 60)
        raw = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))[8:])
        seconds = raw["duration_us"] / 1e6
        return {"tool": "wrk", "rps": (raw["requests"] - raw["errors"]) / seconds, "errors": raw["errors"],
                "p50_us": raw["p50_us"], "p99_us": raw["p99_us"]}
    done = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), "--url", chat, "--api-key", KEY,
                           "--prompt", PROMPT, "--concurrency", str(concurrency), "--duration", str(duration),
                           "--warmup", "1"], check=True, capture_output=True, text=True, timeout=duration + 120)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["tool"] = "loadgen.py"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--latency-duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tiergate-scaleout-"))
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "gateway.cli", "fake-upstream", "--port", str(upstream_port)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    redis_port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, Any] = {"throughput": {}, "latency": {}}
    try:
        wait_http(upstream_url + "/v1/models", upstream)
        for workers in (1, 2):
            process, url = gateway(workdir, upstream_url, workers, {})
            try:
                results["throughput"][workers] = load(url, args.concurrency, args.duration, workdir)
            finally:
                stop(process)
        limits = {"limits": {"requests_per_minute": 10_000_000},
                  "budgets": {"keys": {"bench": {"daily_usd": 1_000_000.0}}}}
        for backend in ("memory", "redis"):
            state = {"backend": backend, "redis_url": f"redis://127.0.0.1:{redis_port}/0"}
            process, url = gateway(workdir, upstream_url, 1, {**limits, "state": state})
            try:
                results["latency"][backend] = load(url, 1, args.latency_duration, workdir)
            finally:
                stop(process)
    finally:
        stop(upstream)
        stop(redis)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results), file=sys.stderr)
    print(render(results, args))
    return 0


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    t1, t2 = results["throughput"][1], results["throughput"][2]
    mem, red = results["latency"]["memory"], results["latency"]["redis"]
    lines = [
        "# Scale-out: `bench/scaleout.py`",
        "",
        f"Measured on a shared {os.cpu_count()}-core machine; gateway workers, fake upstream and load generator "
        f"share the cores. Pass-through (`config/bench-fake.yaml`), concurrency {args.concurrency}, "
        f"{args.duration:.0f} s, load from {t1['tool']}.",
        "",
        "| workers | requests/s | p50 | p99 | errors |",
        "|---:|---:|---:|---:|---:|",
        f"| 1 | {t1['rps']:,.0f} | {t1['p50_us'] / 1000:.2f} ms | {t1['p99_us'] / 1000:.2f} ms | {t1['errors']} |",
        f"| 2 | {t2['rps']:,.0f} | {t2['p50_us'] / 1000:.2f} ms | {t2['p99_us'] / 1000:.2f} ms | {t2['errors']} |",
        "",
        f"2 workers / 1 worker: **{t2['rps'] / t1['rps']:.2f}x**.",
        "",
        f"Latency per request at concurrency 1 ({args.latency_duration:.0f} s each, loadgen.py), one worker, an API "
        "key with a requests/min limit and a daily budget (rate-limit script + budget reserve script per request, "
        "commit queued after the answer):",
        "",
        "| state.backend | p50 | p99 |",
        "|---|---:|---:|",
        f"| memory | {mem['p50_us']:.0f} µs | {mem['p99_us']:.0f} µs |",
        f"| redis | {red['p50_us']:.0f} µs | {red['p99_us']:.0f} µs |",
        f"| added by Redis | {red['p50_us'] - mem['p50_us']:.0f} µs | {red['p99_us'] - mem['p99_us']:.0f} µs |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
