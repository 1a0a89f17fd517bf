"""Compose and Kubernetes wiring of the shared state: a Redis service, its password from a secret, the HPA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.settings import load_settings
from tests.deploy.test_compose import COMPOSE, resolved
from tests.deploy.test_kubernetes import config_map_settings, find, gateway_container


def test_compose_redis_is_optional_password_protected_and_wired_into_the_gateway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = resolved(TIERGATE_STATE_BACKEND="redis", REDIS_PASSWORD="pw", TIERGATE_WORKERS="2")["services"]
    redis = services["redis"]
    assert redis["profiles"] == ["scale"]  # the default stack stays the three services
    assert "ports" not in redis and "requirepass" in redis["command"][-1]
    assert "redis-cli" in redis["healthcheck"]["test"] and redis["environment"]["REDISCLI_AUTH"] == "pw"
    env: dict[str, Any] = services["tiergate"]["environment"]
    assert env["TIERGATE_STATE__BACKEND"] == "redis" and env["TIERGATE_SERVER__WORKERS"] == "2"
    assert env["TIERGATE_STATE__REDIS_URL"] == "redis://redis:6379/0"
    assert env[env["TIERGATE_STATE__REDIS_PASSWORD_ENV"]] == "pw"
    defaults = resolved()["services"]["tiergate"]["environment"]
    assert defaults["TIERGATE_STATE__BACKEND"] == "memory" and defaults["TIERGATE_SERVER__WORKERS"] == "1"
    assert "REDIS_PASSWORD: ${REDIS_PASSWORD:-}" in COMPOSE.read_text()  # never a literal password
    # The environment the gateway gets is valid settings.
    config = tmp_path / "c.yaml"
    config.write_text("tiers: {small: {kind: openai, model: a}, large: {kind: openai, model: b}}\n")
    for name, value in env.items():
        if name.startswith("TIERGATE_") and name != "TIERGATE_CONFIG":
            monkeypatch.setenv(name, str(value))
    settings = load_settings(config)
    assert settings.state.backend == "redis" and settings.server.workers == 2


def test_kubernetes_replicas_share_a_password_protected_redis(tmp_path: Path) -> None:
    settings = config_map_settings(tmp_path)
    assert settings.state.backend == "redis"
    service = find("Service", "tiergate-redis")
    assert settings.state.redis_url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"
    redis = find("Deployment", "tiergate-redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    secret = find("Secret", "tiergate-secrets")
    env = {e["name"]: e for e in gateway_container()["env"]}
    ref = env[str(settings.state.redis_password_env)]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "tiergate-secrets" and ref["key"] in secret["stringData"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    redis_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert redis_env["REDIS_PASSWORD"] == ref["key"] and "$(REDIS_PASSWORD)" in container["args"]


def test_hpa_scales_on_in_flight_requests_per_pod_as_well_as_cpu() -> None:
    metrics = find("HorizontalPodAutoscaler", "tiergate")["spec"]["metrics"]
    pods = [m for m in metrics if m["type"] == "Pods"]
    assert pods and pods[0]["pods"]["metric"]["name"] == "tiergate_in_flight_requests"
    assert pods[0]["pods"]["target"]["type"] == "AverageValue"
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
