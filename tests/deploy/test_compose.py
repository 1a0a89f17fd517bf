"""docker-compose.yml: valid under the Compose Specification, with the services, ports, healthchecks and env."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.settings import load_settings
from tests.deploy.dockerfile_model import REPO, missing_tool

COMPOSE = REPO / "docker-compose.yml"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message} (Compose interpolation).
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Resolve variables the way ``docker compose config`` does (the subset this file uses)."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def resolve(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        unset = value is None or (operator is not None and operator.startswith(":") and value == "")
        if operator in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {argument}")
        if operator in (":-", "-") and unset:
            return argument
        return value or ""

    return VARIABLE.sub(resolve, node)


def raw() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def compose_schema() -> dict[str, Any]:
    # The Compose Specification schema, vendored by check-jsonschema (works offline).
    try:
        path = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    except ModuleNotFoundError:
        missing_tool("check-jsonschema not installed: pip install check-jsonschema (in the test extra)")
    return dict(json.loads(path.read_text()))


def resolved(**env: str) -> dict[str, Any]:
    return dict(interpolate(raw(), {"GRAFANA_ADMIN_PASSWORD": "test-password", **env}))


def test_compose_file_is_valid_under_the_compose_specification() -> None:
    jsonschema.validate(resolved(), compose_schema())
    jsonschema.validate(raw(), compose_schema())


def test_a_broken_service_is_rejected_by_the_schema() -> None:
    broken = resolved()
    broken["services"]["tiergate"]["healthcheck"]["intervall"] = "10s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_stack_has_gateway_prometheus_grafana_and_optional_demo_and_gpu_services() -> None:
    services = resolved()["services"]
    assert {"tiergate", "prometheus", "grafana"} <= set(services)
    for name in ("tiergate", "prometheus", "grafana"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    assert services["fake-upstream"]["profiles"] == ["demo"]
    phi3 = services["phi3-server"]
    assert phi3["profiles"] == ["phi3"]
    devices = phi3["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_phi3_server_answers_where_the_phi3_profile_looks_for_it() -> None:
    phi3 = resolved()["services"]["phi3-server"]
    assert phi3["network_mode"] == "service:tiergate"  # the gateway's 127.0.0.1 is the server's
    small = load_settings(REPO / "config" / "phi3.yaml").tiers["small"]
    port = next(arg.split("=", 1)[1] for arg in phi3["command"] if arg.startswith("--port="))
    served = next(arg.split("=", 1)[1] for arg in phi3["command"] if arg.startswith("--served-model-name="))
    assert small.base_url == f"http://127.0.0.1:{port}/v1"  # type: ignore[union-attr]
    assert (small.upstream_model or small.model) == served  # type: ignore[union-attr]


def test_published_ports() -> None:
    services = resolved()["services"]
    assert services["tiergate"]["ports"] == ["8000:8000"]
    assert services["prometheus"]["ports"] == ["9090:9090"]
    assert services["grafana"]["ports"] == ["3000:3000"]
    assert "ports" not in services["fake-upstream"], "the fake upstream stays on the compose network"
    assert resolved(TIERGATE_PORT="18000")["services"]["tiergate"]["ports"] == ["18000:8000"]


@pytest.mark.parametrize(("service", "probe"), [
    ("tiergate", "/healthz"), ("prometheus", "/-/ready"), ("grafana", "/api/health"),
    ("fake-upstream", "/v1/models"), ("phi3-server", "/health"),
])
def test_every_service_has_a_healthcheck(service: str, probe: str) -> None:
    check = resolved()["services"][service]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert any(probe in part for part in check["test"])
    assert {"interval", "timeout", "retries"} <= set(check)


def test_gateway_profile_is_selected_by_tiergate_profile_and_every_profile_exists() -> None:
    env = resolved()["services"]["tiergate"]["environment"]
    assert env["TIERGATE_CONFIG"] == "/app/config/default.yaml"
    for profile in ("default", "demo-fake", "openai", "phi3"):
        chosen = resolved(TIERGATE_PROFILE=profile)["services"]["tiergate"]["environment"]["TIERGATE_CONFIG"]
        assert (REPO / "config" / Path(chosen).name).is_file(), chosen
    assert env["TIERGATE_SERVER__HOST"] == "0.0.0.0"
    assert env["OPENAI_API_KEY"] == ""  # passed through only when set


def test_required_secrets_fail_with_a_message_and_no_secret_is_written_in_the_file() -> None:
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD: set GRAFANA_ADMIN_PASSWORD"):
        interpolate(raw(), {})
    text = COMPOSE.read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?" in text
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)


def test_demo_profile_points_both_tiers_at_the_fake_upstream_service() -> None:
    settings = load_settings(REPO / "config" / "demo-fake.yaml")
    fake = resolved()["services"]["fake-upstream"]
    port = fake["command"][fake["command"].index("--port") + 1]
    for tier in ("small", "large"):
        backend = settings.tiers[tier]
        assert backend.kind == "openai"
        assert backend.base_url == f"http://fake-upstream:{port}/v1"
    assert settings.server.host == "0.0.0.0"


def test_prometheus_and_grafana_mount_the_monitoring_files_at_the_paths_they_expect() -> None:
    services = resolved()["services"]
    mounts = {m.split(":")[1]: m.split(":")[0] for s in ("prometheus", "grafana") for m in services[s]["volumes"]
              if m.startswith("./")}
    expected = {
        "/etc/prometheus/prometheus.yml": "./deploy/prometheus/prometheus.yml",
        "/etc/prometheus/alerts.yml": "./deploy/prometheus/alerts.yml",
        "/etc/grafana/provisioning/datasources/prometheus.yml":
            "./deploy/grafana/provisioning/datasources/prometheus.yml",
        "/etc/grafana/provisioning/dashboards/tiergate.yml": "./deploy/grafana/provisioning/dashboards/tiergate.yml",
        "/var/lib/grafana/dashboards/tiergate-dashboard.json": "./deploy/grafana/tiergate-dashboard.json",
    }
    assert mounts == expected
    if not (REPO / "deploy" / "prometheus").is_dir():
        pytest.skip("deploy/prometheus/ not written yet (monitoring issue)")
    for source in expected.values():
        assert (REPO / source).is_file(), source


def test_monitoring_files_agree_with_the_compose_service_names() -> None:
    prometheus = REPO / "deploy" / "prometheus" / "prometheus.yml"
    if not prometheus.is_file():
        pytest.skip("deploy/prometheus/ not written yet (monitoring issue)")
    config = yaml.safe_load(prometheus.read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"] or "alerts.yml" in config["rule_files"]
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert "tiergate:8000" in targets
    datasources = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/tiergate.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_gateway_is_hardened_and_drains_before_it_is_killed() -> None:
    gateway = resolved()["services"]["tiergate"]
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    assert gateway["tmpfs"] == ["/tmp"]
    grace = int(gateway["stop_grace_period"].rstrip("s"))
    assert grace > load_settings(REPO / "config" / "default.yaml").server.shutdown_grace_s
