"""The Prometheus config and alert rules: they name exported metrics, and promtool accepts and tests them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_dashboard import exported_series

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_cover_the_issue_s_alerts() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {"TiergateUpstreamErrorRatioHigh", "TiergateP95LatencyHigh", "TiergateClassifierLatencyHigh",
            "TiergateLargeShareDrift", "TiergateSavingsDropped"} <= names


def test_every_rule_names_exported_metrics_and_is_documented() -> None:
    exported = exported_series()
    readme = (PROMETHEUS.parent / "README.md").read_text()
    for rule in rules():
        used = set(re.findall(r"\btiergate_[a-z0-9_]+", rule["expr"]))
        assert used <= exported, f"{rule['alert']}: unknown {used - exported}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description"} <= set(rule["annotations"])
        assert rule["alert"] in readme, rule["alert"]


def test_scrape_config_loads_the_rules_and_scrapes_the_gateway() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "tiergate")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["tiergate:8000"]


@needs_promtool
def test_promtool_checks_the_rules_and_the_config() -> None:
    for command in (["promtool", "check", "rules", str(ALERTS)],
                    ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml")]):
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = subprocess.run(["promtool", "test", "rules", str(PROMETHEUS / "alerts.test.yml")],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
