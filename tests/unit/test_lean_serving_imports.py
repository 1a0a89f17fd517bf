"""A gateway whose shared state lives in memory never imports redis (about 20 MiB of RSS, bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

BUILD_APP = textwrap.dedent(
    """
    import sys
    from gateway.app import create_app
    from gateway.settings import load_settings

    create_app(load_settings("config/openai.yaml", overrides={STATE}))
    print(sorted({m.split(".")[0] for m in sys.modules} & {"redis", "torch", "transformers"}))
    """
)


def _imported(state: str) -> str:
    code = BUILD_APP.replace("{STATE}", state)
    env = {"OPENAI_API_KEY": "sk-test-not-used", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_memory_backend_gateway_imports_no_redis() -> None:
    assert _imported("{}") == "[]"


def test_redis_backend_gateway_imports_redis() -> None:
    assert _imported('{"state": {"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}}') == "['redis']"
