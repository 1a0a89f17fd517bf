"""Pricing: the shipped price file, profile overrides, cost of a usage, the all-large counterfactual."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.accounting import RequestOutcome
from gateway.pricing import PriceTable, format_usd, load_prices, read_price_file
from gateway.settings import ConfigError, Price, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
TIERS = {"small": {"kind": "openai", "model": "gpt-4o-mini"}, "large": {"kind": "openai", "model": "gpt-4o"}}


def test_shipped_prices_are_the_documented_openai_list_prices() -> None:
    prices = read_price_file(REPO / "config" / "prices.yaml")
    assert prices["gpt-4o"] == Price(prompt=2.50, completion=10.00, cached_prompt=1.25)
    assert prices["gpt-4o-mini"] == Price(prompt=0.15, completion=0.60, cached_prompt=0.075)


def test_every_shipped_profile_loads_and_prices_both_tiers() -> None:
    for profile in sorted((REPO / "config").glob("*.yaml")):
        if profile.name == "prices.yaml":
            continue
        settings = load_settings(profile)
        table = PriceTable.from_settings(settings)
        for tier, backend in settings.tiers.items():
            assert backend.model in table.prices, f"{profile.name}: no price for the {tier} model {backend.model}"


def test_profile_prices_override_the_price_file_model_by_model(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text("gpt-4o: {prompt: 2.5, completion: 10}\nother: {prompt: 1, completion: 2}\n")
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "tiers:\n  small: {kind: openai, model: gpt-4o-mini}\n  large: {kind: openai, model: gpt-4o}\n"
        "prices:\n  gpt-4o: {prompt: 5, completion: 15}\n")
    prices = load_prices(load_settings(profile))
    assert prices["gpt-4o"].prompt == 5 and prices["other"].completion == 2


def test_prices_file_null_uses_only_the_profile() -> None:
    settings = Settings(tiers=TIERS, prices_file=None, prices={"gpt-4o": {"prompt": 1, "completion": 1}})
    assert set(load_prices(settings)) == {"gpt-4o"}


def test_an_invalid_price_file_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text("gpt-4o: {prompt: -1, completion: 2}\n")
    with pytest.raises(ConfigError, match="invalid price"):
        read_price_file(bad)


def test_cost_of_a_known_usage_including_cached_prompt_tokens() -> None:
    table = PriceTable(read_price_file(REPO / "config" / "prices.yaml"), large_model="gpt-4o")
    # 800 uncached + 200 cached prompt tokens, 500 completion tokens on gpt-4o-mini.
    assert table.cost("gpt-4o-mini", 1000, 500, 200) == pytest.approx((800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1e6)
    # Without a cached price, cached tokens are charged at the prompt price.
    plain = PriceTable({"m": Price(prompt=1.0, completion=2.0)})
    assert plain.cost("m", 1000, 1000, 400) == pytest.approx(3000 / 1e6)


def test_outcome_gets_its_cost_and_the_all_large_counterfactual() -> None:
    table = PriceTable(read_price_file(REPO / "config" / "prices.yaml"), large_model="gpt-4o")
    outcome = RequestOutcome("r1", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
    table.price(outcome)
    assert outcome.cost_usd == pytest.approx(450e-6)
    assert outcome.counterfactual_cost_usd == pytest.approx(7500e-6)
    large = RequestOutcome("r2", model="gpt-4o", prompt_tokens=1000, completion_tokens=500)
    table.price(large)
    assert large.cost_usd == large.counterfactual_cost_usd == pytest.approx(7500e-6)


def test_a_model_without_price_costs_zero_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable({}, large_model="gpt-4o")
    caplog.set_level(logging.WARNING, "tiergate.pricing")
    for _ in range(3):
        outcome = RequestOutcome("r", model="mystery", prompt_tokens=10, completion_tokens=10)
        table.price(outcome)
        assert outcome.cost_usd == 0.0
    assert sum("mystery" in record.getMessage() for record in caplog.records) == 1


def test_cost_header_is_fixed_point() -> None:
    assert format_usd(435e-6) == "0.00043500"
    assert format_usd(0.0) == "0.00000000"
