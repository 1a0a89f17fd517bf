"""The gateway's own CPU per chat request, in process: the ASGI app driven directly, a canned backend.

No sockets, no uvicorn and no aiohttp: what remains is Tiergate's own work on a JSON chat request (host check,
guard, admission, validation, routing, resilience, accounting, metrics, encoding), measured as process CPU
time, best of ``--repeats`` runs. Compare two trees by running it from each (``PYTHONPATH`` picks the tree):

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/request_path.py
    (cd /tmp/other-tree && PYTHONPATH=. /path/to/.venv/bin/python bench/request_path.py)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"model":"tiergate-auto","messages":[{"role":"user","content":"Say hello."}]}'
ANSWER = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}


class CannedBackend:
    """Answers every chat request at once with the same completion (a ``gateway.backends.base.Backend``)."""

    def __init__(self, name: str, model: str) -> None:
        self.name, self.model = name, model

    async def start(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    async def complete(self, body: dict[str, Any], client_headers: dict[str, str] | None = None) -> dict[str, Any]:
        return dict(ANSWER)

    def stream(self, body: dict[str, Any], client_headers: dict[str, str] | None = None) -> Any:
        raise NotImplementedError("JSON requests only")

    async def aclose(self) -> None:
        return None


def chat_scope() -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(BODY)).encode())]}


async def measure(config: Path, requests: int, repeats: int) -> list[float]:
    settings = load_settings(config)
    backends = {tier: CannedBackend(tier, cfg.model) for tier, cfg in settings.tiers.items()}
    app = create_app(settings, backends=backends)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def one() -> None:
        scope = chat_scope()
        await app(scope, receive, send)

    async with app.router.lifespan_context(app):
        for _ in range(1000):
            if app.state.gateway.guard.loaded:
                break
            await asyncio.sleep(0.01)
        for _ in range(2000):  # warm-up: bound children, caches, pydantic's validators
            await one()
        if sent[0]["status"] != 200:
            raise SystemExit(f"the gateway answered {sent[0]['status']}: {sent[1]['body']!r}")
        results = []
        for _ in range(repeats):
            sent.clear()
            started = time.process_time()
            for _ in range(requests):
                await one()
            results.append((time.process_time() - started) / requests * 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "bench-fake.yaml")
    parser.add_argument("--requests", type=int, default=6000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = asyncio.run(measure(args.config, args.requests, args.repeats))
    print(f"{min(results):.1f} µs of CPU per chat request (best of {args.repeats} x {args.requests}; "
          f"all: {', '.join(f'{r:.1f}' for r in results)})")


if __name__ == "__main__":
    main()
