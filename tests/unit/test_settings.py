"""load_settings: YAML plus TIERGATE_* overrides; unknown or invalid keys fail with a message naming them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import set_openmp_wait_policy
from gateway.settings import ConfigError, OpenAIBackend, Settings, load_settings

BASE = """\
tiers:
  small: {kind: openai, model: gpt-4o-mini, base_url: "http://127.0.0.1:9/v1"}
  large: {kind: openai, model: gpt-4o, base_url: "http://127.0.0.1:9/v1"}
routing:
  router: always-small
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own TIERGATE_* variables must not leak into these tests."""
    for key in list(os.environ):
        if key.startswith("TIERGATE_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiergate.yaml"
    path.write_text(text)
    return path


def test_valid_yaml_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE))
    assert settings.routing.router == "always-small"
    assert settings.routing.threshold is None  # the classifier checkpoint's recommended threshold applies
    small = settings.tiers["small"]
    assert isinstance(small, OpenAIBackend) and small.model == "gpt-4o-mini"


def test_environment_overrides_yaml_including_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_ROUTING__THRESHOLD", "0.3")
    monkeypatch.setenv("TIERGATE_TIERS__SMALL__BASE_URL", "http://127.0.0.1:9100/v1")
    settings = load_settings(write(tmp_path, BASE))
    assert settings.routing.threshold == 0.3
    assert settings.routing.router == "always-small"  # the rest of the YAML section survives
    small = settings.tiers["small"]
    assert isinstance(small, OpenAIBackend)
    assert small.base_url == "http://127.0.0.1:9100/v1"
    assert small.model == "gpt-4o-mini"


def test_code_arguments_win_over_environment_which_wins_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_ROUTING__THRESHOLD", "0.3")
    path = write(tmp_path, BASE)
    assert load_settings(path).routing.threshold == 0.3  # environment over YAML
    coded = load_settings(path, {"routing": {"threshold": 0.4}})
    assert coded.routing.threshold == 0.4  # code over environment
    assert coded.routing.router == "always-small"  # a nested override replaces only its own key
    built = Settings(tiers={"small": {"kind": "openai", "model": "a"}, "large": {"kind": "openai", "model": "b"}},
                     routing={"threshold": 0.45})
    assert built.routing.threshold == 0.45  # settings built in code are not silently changed by the environment


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_CONFIG", str(write(tmp_path, BASE)))
    assert load_settings().routing.router == "always-small"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("telemetry: {enabled: true}\n", "telemetry"),
        ("server: {hots: 0.0.0.0}\n", "hots"),
        ("server:\n  max_body_byte: 10\n", "max_body_byte"),
    ],
)
def test_unknown_yaml_key_fails_naming_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(write(tmp_path, BASE + extra))


def test_unknown_nested_yaml_key_names_its_full_path(tmp_path: Path) -> None:
    text = BASE.replace("  router: always-small\n", "  router: always-small\n  treshold: 0.4\n")
    with pytest.raises(ConfigError, match=r"routing\.treshold"):
        load_settings(write(tmp_path, text))


def test_unknown_key_inside_a_tier_fails_naming_the_key(tmp_path: Path) -> None:
    text = BASE.replace("model: gpt-4o-mini,", "model: gpt-4o-mini, api_key: sk-in-yaml,")
    with pytest.raises(ConfigError, match="api_key"):
        load_settings(write(tmp_path, text))


def test_unknown_environment_section_fails_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_ROUTNG__THRESHOLD", "0.3")
    with pytest.raises(ConfigError, match="TIERGATE_ROUTNG__THRESHOLD"):
        load_settings(write(tmp_path, BASE))


def test_unknown_nested_environment_key_fails_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_ROUTING__TRESHOLD", "0.3")
    with pytest.raises(ConfigError, match="(?i)treshold"):
        load_settings(write(tmp_path, BASE))


def test_reserved_environment_variables_are_not_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE)
    monkeypatch.setenv("TIERGATE_CONFIG", str(path))
    monkeypatch.setenv("TIERGATE_CACHE_DIR", str(tmp_path / "cache"))
    assert load_settings(path).routing.router == "always-small"


def test_invalid_value_fails_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routing\.threshold"):
        load_settings(write(tmp_path, BASE + "  threshold: 1.5\n"))


def test_missing_file_and_non_mapping_yaml_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="YAML"):
        load_settings(write(tmp_path, "tiers: [unclosed\n"))


@pytest.mark.parametrize(("config", "expected"), [("default.yaml", "PASSIVE"), ("openai.yaml", None)])
def test_openmp_threads_sleep_only_when_models_run_in_process(
    monkeypatch: pytest.MonkeyPatch, config: str, expected: str | None
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    set_openmp_wait_policy(load_settings(Path(__file__).resolve().parents[2] / "config" / config))
    assert os.environ.get("OMP_WAIT_POLICY") == expected
