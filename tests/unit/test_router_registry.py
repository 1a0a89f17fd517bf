"""The router registry: names and option defaults written once, read by settings and the CLI; every name builds."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields

import pytest

from gateway.settings import ClassifierSettings, ConfigError, RoutingSettings, load_settings
from routers.base import DEFAULT_THRESHOLD, Router
from routers.cli import add_commands
from routers.options import CLASSIFIER_DEFAULTS, RUNTIMES, ClassifierOptions, RouterOptions
from routers.registry import DEFAULT_ROUTER, ROUTER_NAMES, ROUTERS, build_router, router_kind
from routers.threshold import first_threshold, share_controller_from


def test_an_unknown_name_is_refused_naming_every_registered_router() -> None:
    with pytest.raises(ValueError, match="unknown router 'keywords'") as raised:
        build_router("keywords")
    assert all(name in str(raised.value) for name in ROUTER_NAMES)
    with pytest.raises(ConfigError) as config:
        load_settings(overrides={"routing": {"router": "keywords"}})
    assert "routing.router" in str(config.value) and all(name in str(config.value) for name in ROUTER_NAMES)


def test_settings_accept_exactly_the_registered_names() -> None:
    assert ROUTER_NAMES == ("classifier", "random", "always-small", "always-large")
    assert RoutingSettings().router == DEFAULT_ROUTER == "classifier"
    for name in ROUTER_NAMES:
        assert RoutingSettings(router=name).router == name


@pytest.mark.parametrize("name", ROUTER_NAMES)
async def test_every_registered_name_builds_a_router_that_reports_that_name(name: str) -> None:
    router: Router = router_kind(name).build()
    assert router.name == name and not router.ready()
    assert build_router(name, seed=3, path="builtin", threads=1).name == name
    if name == "classifier":
        return  # loading the shipped checkpoint is covered by the classifier and ONNX tests
    await router.start()
    try:
        assert 0.0 <= await router.score("hello") <= 1.0
    finally:
        await router.aclose()


async def test_baselines_name_their_own_reason() -> None:
    small, large, coin = (router_kind(name).build(RouterOptions(seed=7))
                          for name in ("always-small", "always-large", "random"))
    for router in (small, large, coin):
        await router.start()
    # Fixed routers go where they are named whatever the threshold; the decision reports the threshold used.
    assert small.decide(await small.score("x"), 0.0).tier == "small"
    assert large.decide(await large.score("x"), 1.0).tier == "large"
    decision = large.decide(1.0, 0.3)
    assert (decision.reason, decision.score, decision.threshold) == ("fixed", 1.0, 0.3)
    assert small.recommended_threshold is None and large.recommended_threshold is None
    # The coin applies the threshold it is given, under its own reason.
    assert coin.recommended_threshold == DEFAULT_THRESHOLD
    assert coin.decide(0.6, 0.5).tier == "large" and coin.decide(0.6, 0.7).tier == "small"
    assert coin.decide(0.6, 0.5).reason == "random"


def test_the_classifier_applies_the_shared_rule_and_names_its_checkpoint() -> None:
    router = router_kind("classifier").build()
    above, below = router.decide(0.5, 0.5, "ckpt@1234"), router.decide(0.49, 0.5)
    assert (above.tier, above.reason, above.router) == ("large", "score_above_threshold", "ckpt@1234")
    assert (below.tier, below.reason, below.router) == ("small", "score_below_threshold", None)


def test_classifier_defaults_are_written_once_and_settings_take_them() -> None:
    settings = ClassifierSettings()
    assert set(ClassifierSettings.model_fields) == {field.name for field in fields(ClassifierOptions)}
    assert ClassifierOptions.from_mapping(settings.model_dump()) == CLASSIFIER_DEFAULTS == ClassifierOptions()
    assert settings.model_dump() == asdict(CLASSIFIER_DEFAULTS)
    assert RouterOptions().classifier == CLASSIFIER_DEFAULTS


def test_the_cli_reads_the_classifier_defaults_and_runtimes() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", "--in", "a.jsonl", "--out", "b.jsonl"])
    assert (args.model, args.threads, args.runtime) == (
        CLASSIFIER_DEFAULTS.path, CLASSIFIER_DEFAULTS.threads, CLASSIFIER_DEFAULTS.runtime)
    for runtime in RUNTIMES:
        assert parser.parse_args(["score", "--in", "a", "--out", "b", "--runtime", runtime]).runtime == runtime
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "--in", "a", "--out", "b", "--runtime", "tensorflow"])


def test_runtime_names_agree_with_the_runtime_module() -> None:
    from routers.runtime import RUNTIMES as LOADED

    assert LOADED == RUNTIMES  # routers.runtime keeps its own copy until it imports routers.options


def test_bad_classifier_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown classifier options: \['nonsense'\]"):
        ClassifierOptions.from_mapping({"nonsense": 1})
    with pytest.raises(ValueError, match="unknown classifier runtime 'tensorflow'; choose auto, onnx, torch"):
        ClassifierOptions(runtime="tensorflow")  # type: ignore[arg-type]


def test_the_registry_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        ROUTERS["keywords"] = ROUTERS["random"]  # type: ignore[index]


def test_thresholds_fall_back_in_one_place() -> None:
    assert first_threshold() == first_threshold(None, None) == DEFAULT_THRESHOLD == 0.5
    assert first_threshold(None, 0.16) == 0.16 and first_threshold(0.42, 0.16) == 0.42
    assert share_controller_from(None, 1000) is None
    controller = share_controller_from(0.3, 100)
    assert controller is not None and (controller.target, controller.window) == (0.3, 100)
    assert controller.threshold() == DEFAULT_THRESHOLD
    configured = share_controller_from(0.3, 100, threshold=0.42)
    assert configured is not None and configured.threshold() == 0.42
