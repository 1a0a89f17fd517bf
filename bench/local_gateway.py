"""The gateway over SSE for bench/local_models.py: ``tiergate serve`` in a subprocess and a streaming client."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import httpx
import yaml

from gateway.settings import LocalBackend

REPO = Path(__file__).resolve().parent.parent
PROMPT = [{"role": "user", "content": "Write a long, detailed story about a lighthouse keeper and a storm."}]


def rate(tokens: int, first: float, last: float) -> float:
    """Decode tokens/s: the tokens after the first over the time between the first and the last."""
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")


def loop_cpu_s(pid: int | None) -> float:
    """CPU time of a process's main thread (its event loop), from Linux schedstat; 0 where unavailable."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


async def run_gateway(
    client: httpx.AsyncClient, model: str, max_tokens: int, pid: int | None = None
) -> dict[str, float]:
    body = {
        "model": model,
        "messages": PROMPT,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    loop_before = loop_cpu_s(pid)
    start = time.perf_counter()
    times: list[float] = []
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices") and (event["choices"][0].get("delta") or {}).get("content"):
                times.append(time.perf_counter())
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return {
        "ttft_s": times[0] - start,
        "tok_s": rate(tokens, times[0], times[-1]),
        "tokens": tokens,
        # What the gateway's event loop (HTTP, routing, accounting, SSE) spends per streamed token.
        "loop_ms_per_token": 1000 * (loop_cpu_s(pid) - loop_before) / max(tokens, 1),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """``tiergate serve`` in a subprocess with the small tier set to the model under test."""

    def __init__(self, local: LocalBackend, workdir: Path) -> None:
        self.port = free_port()
        tier = local.model_dump(exclude_none=True)
        config = {
            "server": {"host": "127.0.0.1", "port": self.port},
            # The large tier is never called (always-small); an HTTP backend does not load a second model.
            "tiers": {
                "small": tier,
                "large": {"kind": "openai", "model": "unused", "base_url": "http://127.0.0.1:9/v1"},
            },
            "routing": {"router": "always-small"},
        }
        self.config = workdir / f"{local.model}.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(self.config),
            "--log-level",
            "warning",
        ]
        self.process = await asyncio.create_subprocess_exec(*cmd, cwd=REPO)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}")
            try:
                if (await self.client.get("/readyz")).status_code == 200:
                    return self.client
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError("gateway did not become ready")

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        if self.process is not None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 60)
