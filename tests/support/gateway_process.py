"""``tiergate serve`` as a real child process (replicas, workers) with a YAML config written to a tmp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.gateway import LARGE_MODEL, SMALL_MODEL
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent.parent


def process_config(upstream_url: str, **sections: Any) -> dict[str, Any]:
    """Both tiers on the fake upstream; ``sections`` are merged over the top-level sections."""
    timeout = {"connect": 2, "read": 5, "write": 2, "pool": 2}
    config: dict[str, Any] = {
        "tiers": {"small": {"kind": "openai", "model": SMALL_MODEL, "base_url": upstream_url + "/v1", "timeout": timeout},
                  "large": {"kind": "openai", "model": LARGE_MODEL, "base_url": upstream_url + "/v1", "timeout": timeout}},
        "routing": {"router": "always-large"},
        "server": {"host": "127.0.0.1", "load_before_serving": True, "shutdown_grace_s": 10},
        "prices_file": str(REPO / "config" / "prices.yaml"),  # relative names resolve beside the tmp config
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


class GatewayProcess:
    """One ``python -m gateway.cli serve`` on a free loopback port; ``url`` once ready."""

    def __init__(self, directory: Path, config: dict[str, Any], workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / f"gateway-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / f"gateway-{self.port}.log"
        self.workers = workers
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> GatewayProcess:
        args = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path),
                "--port", str(self.port), "--log-level", "warning", "--workers", str(self.workers)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
