"""The Grafana dashboard: valid against Grafana's dashboard model, and every query names exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.telemetry.metrics import FAMILIES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "tiergate-dashboard.json"
PANEL_TYPES = {"row", "timeseries", "stat", "heatmap", "table", "gauge", "bargauge", "text", "piechart"}

# The parts of Grafana's dashboard JSON model (schemaVersion 36+) that provisioning and the panels rely on.
TARGET = {"type": "object", "required": ["refId", "expr", "datasource"],
          "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"}, "expr": {"type": "string", "minLength": 1},
                         "legendFormat": {"type": "string"}, "format": {"enum": ["time_series", "table", "heatmap"]},
                         "datasource": {"$ref": "#/$defs/datasource"}}}
GRID = {"type": "object", "required": ["h", "w", "x", "y"], "additionalProperties": False,
        "properties": {"h": {"type": "integer", "minimum": 1}, "w": {"type": "integer", "minimum": 1, "maximum": 24},
                       "x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0}}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "time", "templating"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "editable": {"type": "boolean"},
        "refresh": {"type": "string"},
        "time": {"type": "object", "required": ["from", "to"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"type": {"enum": ["datasource", "query", "custom", "interval", "constant", "textbox"]}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": sorted(PANEL_TYPES)},
                "title": {"type": "string", "minLength": 1},
                "gridPos": GRID,
                "datasource": {"$ref": "#/$defs/datasource"},
                "targets": {"type": "array", "items": TARGET},
                "fieldConfig": {"type": "object", "required": ["defaults", "overrides"]},
                "options": {"type": "object"},
            },
            "if": {"properties": {"type": {"not": {"const": "row"}}}},
            "then": {"required": ["targets", "datasource", "fieldConfig", "description"],
                     "properties": {"targets": {"minItems": 1}}},
        }},
    },
    "$defs": {"datasource": {"type": "object", "required": ["type", "uid"],
                             "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}},
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exported_series() -> set[str]:
    names: set[str] = set()
    for spec in FAMILIES:
        names.add(spec.name)
        if spec.kind == "histogram":
            names.update(spec.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def expressions() -> Iterator[tuple[str, str]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboard_matches_grafanas_dashboard_model() -> None:
    jsonschema.validate(dashboard(), SCHEMA)


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_query_names_only_metrics_the_gateway_exports() -> None:
    exported = exported_series()
    for title, expr in expressions():
        used = set(re.findall(r"\btiergate_[a-z0-9_]+", expr))
        assert used, f"{title}: no tiergate metric in {expr}"
        assert used <= exported, f"{title}: unknown {used - exported}"


def test_the_issue_s_panels_are_there() -> None:
    text = " ".join(expr for _, expr in expressions())
    for needed in ("tiergate_requests_total", "tiergate_cost_usd_total", "tiergate_saved_usd_total",
                   "tiergate_request_duration_seconds_bucket", "tiergate_time_to_first_token_seconds_bucket",
                   "tiergate_routing_score_bucket", "tiergate_upstream_errors_total", "tiergate_backend_queue_depth",
                   "tiergate_large_share_target"):
        assert needed in text, needed


def test_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/tiergate.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_panel_is_described_in_the_deploy_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for panel in dashboard()["panels"]:
        assert panel["title"] in readme, panel["title"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, (_, expr) in enumerate(expressions()):
        concrete = (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
                    .replace("$instance", ".*"))
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_family_is_documented_in_the_deploy_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for spec in FAMILIES:
        assert f"| `{spec.name}` | {spec.kind} |" in readme, spec.name
