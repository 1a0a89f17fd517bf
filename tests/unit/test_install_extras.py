"""A plain install serves a remote-only profile: nothing from the [local], [train] or [test] extras is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Packages that only the extras bring: importing any of them on the serving path would break `pip install tiergate`.
EXTRAS_ONLY = ["torch", "transformers", "tqdm", "matplotlib", "openai", "gguf", "accelerate", "llguidance", "onnx",
               "psycopg", "pytest", "hypothesis"]

SERVE_REMOTE_PROFILE = f"""
import sys
for name in {EXTRAS_ONLY!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
from fastapi.testclient import TestClient
from gateway.app import create_app
from gateway.settings import load_settings

settings = load_settings({str(REPO / "config" / "openai.yaml")!r}, {{"server": {{"load_before_serving": True}}}})
with TestClient(create_app(settings)) as client:  # the shipped classifier router, on ONNX Runtime
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/models").status_code == 200
print("served")
"""


def test_remote_profile_serves_without_any_extra() -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-used"}
    done = subprocess.run([sys.executable, "-c", SERVE_REMOTE_PROFILE], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "served"
