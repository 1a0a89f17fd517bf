"""An installed gateway carries its profiles: the wheel holds config/ as gateway/profiles, and the settings
loader finds the default profile, its prices and the judge prompts there, outside any checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LOAD = """
import json
from gateway.learning.loop import judge_prompts_dir
from gateway.settings import DEFAULT_CONFIG, load_settings
settings = load_settings()
print(json.dumps({"config": str(DEFAULT_CONFIG), "router": settings.routing.router,
                  "tiers": sorted(settings.tiers), "prices": settings.prices_file,
                  "judge": sorted(p.name for p in judge_prompts_dir(settings).iterdir())}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built with setuptools from a copy of the sources (links kept as links)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("gateway", "routers", "config"):
        shutil.copytree(ROOT / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.onnx.data", "*.safetensors"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    build = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", build, str(out)], cwd=src, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_the_wheel_holds_every_profile_and_judge_prompt(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "config").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".txt"):
            assert f"gateway/profiles/{path.relative_to(ROOT / 'config')}" in names


def test_an_installed_gateway_loads_its_default_profile_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout)
    assert loaded["config"] == str(site / "gateway" / "profiles" / "default.yaml")
    assert loaded["router"] == "classifier" and loaded["tiers"] == ["large", "small"]
    assert loaded["prices"] == str(site / "gateway" / "profiles" / "prices.yaml")
    assert "pairwise_system.txt" in loaded["judge"]
