"""The serving path of config/openai.yaml with the shipped router: ONNX Runtime only, torch never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

# Runs in a fresh interpreter: the test process itself has torch loaded by other tests.
SERVE_AND_SCORE = textwrap.dedent(
    """
    import json, sys
    import httpx, yaml
    from gateway.app import create_app
    from gateway.tools.fake_upstream import FakeUpstream, ServerThread
    from gateway.settings import load_settings

    fake = FakeUpstream()
    with ServerThread(fake) as upstream:
        data = yaml.safe_load(open("config/openai.yaml"))
        for tier in data["tiers"].values():
            tier["base_url"] = upstream.url + "/v1"
        settings = load_settings(
            "config/openai.yaml",
            overrides={"tiers": data["tiers"], "server": {"host": "127.0.0.1", "port": 0, "load_before_serving": True}},
        )
        with ServerThread(create_app(settings)) as gateway:
            headers = []
            for text in ("hi there", "Prove that there are infinitely many primes, then prove Fermat's little theorem."):
                body = {"model": "tiergate-auto", "messages": [{"role": "user", "content": text}]}
                response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
                response.raise_for_status()
                headers.append({k: v for k, v in response.headers.items() if k.startswith("x-tiergate")})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnxruntime"))
    print(json.dumps({"headers": headers, "roots": sorted({m.split(".")[0] for m in loaded})}))
    """
)


@pytest.mark.slow
def test_openai_profile_scores_with_onnx_and_never_imports_torch() -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-used", "PYTHONPATH": str(REPO)}
    env.pop("TIERGATE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_SCORE], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["roots"] == ["onnxruntime"], result
    greeting, proof = result["headers"]
    assert greeting["x-tiergate-reason"] == "score_below_threshold" and greeting["x-tiergate-tier"] == "small"
    assert float(proof["x-tiergate-score"]) > float(greeting["x-tiergate-score"])
