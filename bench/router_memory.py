"""Startup time and idle/peak RSS of ``tiergate serve --config config/openai.yaml`` with each router runtime.

The tiers point at ``tiergate fake-upstream`` on loopback, so only the gateway and its router are measured.
Each variant is started ``--repeats`` times: startup is process spawn until ``/readyz`` answers 200, idle
RSS is read one second after that, peak RSS (``VmHWM``) after ``--requests`` distinct chat requests at
concurrency ``--concurrency`` (every one scored by the router, the decision cache never hits).

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/router_memory.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, dict[str, Any]] = {
    "router off": {"router": "always-small"},
    "onnx": {"router": "classifier", "classifier": {"runtime": "onnx"}},
    "torch": {"router": "classifier", "classifier": {"runtime": "torch"}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(VmRSS, VmHWM, RssFile) of one process, in KiB; RssFile counts mapped files (libraries, router weights)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"], fields["RssFile"]


def wait_ready(url: str, process: subprocess.Popen[bytes], limit_s: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError("gateway not ready in time")


async def drive(url: str, requests: int, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(i: int) -> None:
            text = f"request {i}: explain how the integral of a matrix valued function relates to the law of large"
            body = {"model": "tiergate-auto", "messages": [{"role": "user", "content": text}]}
            async with limit:
                (await client.post("/v1/chat/completions", json=body)).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(requests)))


def measure(name: str, routing: dict[str, Any], upstream: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "config" / "openai.yaml").read_text())
    for tier in config["tiers"].values():
        tier["base_url"] = upstream + "/v1"
    port = free_port()
    config["server"] = {"host": "127.0.0.1", "port": port}
    config["routing"] = {**config["routing"], **routing}
    if args.model != "builtin" and "classifier" in routing:
        config["routing"]["classifier"] = {**routing["classifier"], "path": args.model}
    config["prices_file"] = str(REPO / "config" / "prices.yaml")
    file = tmp / f"{name.replace(' ', '-')}.yaml"
    file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench-not-used", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(file), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        startup = wait_ready(url, process)
        time.sleep(1.0)
        idle, _, idle_file = memory_kib(process.pid)
        asyncio.run(drive(url, args.requests, args.concurrency))
        after, peak, _ = memory_kib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return {"variant": name, "startup_s": startup, "idle_mib": idle / 1024, "idle_mb": idle * 1.024 / 1000,
            "idle_file_mib": idle_file / 1024, "after_mib": after / 1024, "peak_mib": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", default=None)
    parser.add_argument("--model", default="builtin", help="the classifier's checkpoint (builtin or a directory)")
    args = parser.parse_args()
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "fake-upstream", "--port", str(upstream_port)], cwd=REPO
    )
    rows: list[dict[str, Any]] = []
    try:
        time.sleep(1.5)
        with tempfile.TemporaryDirectory(prefix="tiergate-router-memory-") as tmp:
            for _ in range(args.repeats):
                for name in args.variants:
                    row = measure(name, VARIANTS[name], f"http://127.0.0.1:{upstream_port}", args, Path(tmp))
                    rows.append(row)
                    rounded = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                    print(json.dumps(rounded), flush=True)
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=30)
    print("\n| router | startup s (median) | idle RSS MB | idle RSS MiB | of it mapped files MiB | RSS after load MiB |"
          " peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.variants:
        mine = [r for r in rows if r["variant"] == name]

        def med(key: str, rows_: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in rows_)

        keys = ("idle_mb", "idle_mib", "idle_file_mib", "after_mib", "peak_mib")
        memory = " | ".join(f"{med(key):.0f}" for key in keys)
        print(f"| {name} | {med('startup_s'):.2f} | {memory} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
