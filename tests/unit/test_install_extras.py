"""A plain install serves a remote-only profile: nothing from the [local], [train] or [test] extras is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Packages that only the extras bring: importing any of them on the serving path would break `pip install tiergate`.
EXTRAS_ONLY = ["torch", "transformers", "tqdm", "matplotlib", "openai", "httpx", "gguf", "accelerate", "llguidance",
               "onnx", "psycopg", "pytest", "hypothesis"]

# Served through the ASGI interface itself: Starlette's test client needs httpx, which serving must not.
SERVE_REMOTE_PROFILE = f"""
import asyncio
import sys
for name in {EXTRAS_ONLY!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
from gateway.app import create_app
from gateway.settings import load_settings


async def get(app, path):
    sent = []

    async def receive():
        return {{"type": "http.request", "body": b"", "more_body": False}}

    async def send(message):
        sent.append(message)

    scope = {{"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8000")], "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "root_path": ""}}
    await app(scope, receive, send)
    return sent[0]["status"]


async def main():
    settings = load_settings({str(REPO / "config" / "openai.yaml")!r}, {{"server": {{"load_before_serving": True}}}})
    app = create_app(settings)  # the shipped classifier router, on ONNX Runtime
    async with app.router.lifespan_context(app):
        for path in ("/healthz", "/readyz", "/v1/models"):
            assert await get(app, path) == 200, path


asyncio.run(main())
print("served")
"""


def test_remote_profile_serves_without_any_extra() -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-used"}
    done = subprocess.run([sys.executable, "-c", SERVE_REMOTE_PROFILE], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "served"
