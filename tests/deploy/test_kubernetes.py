"""deploy/kubernetes: every manifest valid against the Kubernetes schemas, and the pieces agree with each other."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.settings import load_settings
from tests.deploy.dockerfile_model import REPO, missing_tool, read_stages

try:
    import kubernetes_validate.utils as kubernetes_validate
except ImportError:  # pragma: no cover - the test extra installs it
    missing_tool("kubernetes-validate not installed: pip install kubernetes-validate (in the test extra)")

KUBE = REPO / "deploy" / "kubernetes"
# Native sidecars (init containers with restartPolicy: Always) need 1.29; also check the newest bundled.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
SERVICEMONITOR_SCHEMA = Path(__file__).parent / "schemas" / "servicemonitor-monitoring-v1.json"
NOT_KUBERNETES = {"Kustomization"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted(KUBE.glob("*.yaml")) for doc in documents(path)]


def find(kind: str, name: str | None = None, file: str | None = None) -> dict[str, Any]:
    for filename, doc in all_documents():
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name) and file in (None, filename):
            return doc
    raise AssertionError(f"no {kind} {name or ''} in deploy/kubernetes")


def validate(doc: dict[str, Any], version: str) -> None:
    if doc["kind"] == "ServiceMonitor":
        jsonschema.validate(doc, json.loads(SERVICEMONITOR_SCHEMA.read_text()))
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("filename", "doc"), [
    pytest.param(f, d, id=f"{f}:{d['kind']}/{d['metadata']['name']}") for f, d in all_documents()
    if d["kind"] not in NOT_KUBERNETES
])
def test_manifest_is_valid_against_the_kubernetes_schema(filename: str, doc: dict[str, Any], version: str) -> None:
    validate(doc, version)


def test_the_validator_rejects_an_unknown_field_and_a_wrong_type() -> None:
    deployment = find("Deployment", "tiergate")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo, VERSIONS[-1])
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong, VERSIONS[-1])
    monitor = copy.deepcopy(find("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, VERSIONS[-1])


def test_kustomization_lists_every_manifest_except_the_examples() -> None:
    kustomization = documents(KUBE / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in present if "example" in name}
    assert listed == present - examples
    assert examples == {"secret.example.yaml", "sidecar-example.yaml"}


def gateway_container() -> dict[str, Any]:
    containers = find("Deployment", "tiergate")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "tiergate")


def test_probes_readiness_on_readyz_and_liveness_on_healthz() -> None:
    container = gateway_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]


def test_resources_security_and_graceful_termination(tmp_path: Path) -> None:
    pod = find("Deployment", "tiergate")["spec"]["template"]["spec"]
    container = gateway_container()
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The image's USER is the uid the pod asks for.
    image_user = read_stages()[-1].all("USER")[-1].value.split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == image_user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    settings = config_map_settings(tmp_path)
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.server.shutdown_grace_s
    strategy = find("Deployment", "tiergate")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def config_map_settings(tmp_path: Path, name: str = "tiergate-config") -> Any:
    path = tmp_path / "tiergate.yaml"
    path.write_text(find("ConfigMap", name)["data"]["tiergate.yaml"])
    return load_settings(path)


def test_config_map_holds_valid_settings_with_keys_from_the_secret_only(tmp_path: Path) -> None:
    settings = config_map_settings(tmp_path)
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8000
    env = {e["name"]: e for e in gateway_container()["env"]}
    assert env["TIERGATE_CONFIG"]["value"] == "/etc/tiergate/tiergate.yaml"
    mount = next(m for m in gateway_container()["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/tiergate"
    secret = find("Secret", "tiergate-secrets")
    for tier in settings.tiers.values():
        key_env = getattr(tier, "api_key_env", None)
        if key_env:
            ref = env[key_env]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert "sk-" not in (KUBE / "configmap.yaml").read_text()


def test_service_hpa_pdb_and_servicemonitor_select_the_gateway_pods() -> None:
    deployment = find("Deployment", "tiergate")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find("Service", "tiergate")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = find("PodDisruptionBudget", "tiergate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    hpa = find("HorizontalPodAutoscaler", "tiergate")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tiergate"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    monitor = find("ServiceMonitor", "tiergate")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"


def test_sidecar_example_runs_tiergate_on_loopback_next_to_the_app(tmp_path: Path) -> None:
    deployment = find("Deployment", "my-app", file="sidecar-example.yaml")
    pod = deployment["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "tiergate")
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the app, down after it
    sidecar_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert sidecar_env["TIERGATE_SERVER__HOST"] == "127.0.0.1"
    app = next(c for c in pod["containers"] if c["name"] == "app")
    app_env = {e["name"]: e.get("value") for e in app["env"]}
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:8000/v1"
    assert config_map_settings(tmp_path, "my-app-tiergate").server.host == "127.0.0.1"
