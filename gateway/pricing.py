"""Prices: the USD price table, the cost of one usage, and the all-large counterfactual of a request."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from gateway.accounting import RequestOutcome
from gateway.settings import DEFAULT_CONFIG, ConfigError, Price, Settings

log = logging.getLogger("tiergate.pricing")

PER_TOKEN = 1e-6  # prices are USD per 1M tokens


def read_price_file(path: str | Path) -> dict[str, Price]:
    """A YAML mapping ``model -> {prompt, completion, cached_prompt}``, optionally under a ``prices:`` key."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"price file {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("prices"), dict):
        data = data["prices"]
    if not isinstance(data, dict):
        raise ConfigError(f"price file {path} must map model names to prices")
    try:
        return {str(model): Price.model_validate(value) for model, value in data.items()}
    except ValidationError as exc:
        raise ConfigError(f"invalid price in {path}: {exc}") from None


def price_file_path(settings: Settings) -> Path | None:
    """``prices_file`` as configured; a relative path (settings built in code) is taken from ``config/``."""
    name = settings.prices_file
    if not name:
        return None
    path = Path(name)
    return path if path.is_absolute() else DEFAULT_CONFIG.parent / path


def load_prices(settings: Settings) -> dict[str, Price]:
    """The shipped/operator price file, overridden model by model by the profile's own ``prices:``."""
    prices: dict[str, Price] = {}
    path = price_file_path(settings)
    if path is not None:
        if path.is_file():
            prices.update(read_price_file(path))
        else:
            log.warning("price file %s not found; only the profile's prices apply", path)
    prices.update(settings.prices)
    return prices


class PriceTable:
    """Prices usage in USD. A model without a price costs 0, with one warning per model (never a crash)."""

    def __init__(self, prices: Mapping[str, Price], large_model: str | None = None) -> None:
        self.prices = dict(prices)
        self.large_model = large_model
        self._warned: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        large = settings.tiers.get("large")
        return cls(load_prices(settings), large.model if large is not None else None)

    def price_of(self, model: str | None) -> Price | None:
        if model is None:
            return None
        price = self.prices.get(model)
        if price is None and model not in self._warned:
            self._warned.add(model)
            log.warning("no price configured for model %r: its requests are counted at 0 USD", model)
        return price

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for one usage. Cached prompt tokens are part of ``prompt_tokens`` (OpenAI's convention)."""
        price = self.price_of(model)
        if price is None:
            return 0.0
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = price.prompt if price.cached_prompt is None else price.cached_prompt
        return ((prompt_tokens - cached) * price.prompt + cached * cached_price
                + completion_tokens * price.completion) * PER_TOKEN

    def price(self, outcome: RequestOutcome) -> None:
        """Fill ``cost_usd`` and ``counterfactual_cost_usd`` from the outcome's real usage. Idempotent."""
        prompt, completion, cached = outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_prompt_tokens
        if not (prompt or completion):
            outcome.cost_usd = outcome.counterfactual_cost_usd = 0.0
            return
        outcome.cost_usd = self.cost(outcome.model, prompt, completion, cached)
        if outcome.model == self.large_model or self.large_model is None:
            outcome.counterfactual_cost_usd = outcome.cost_usd
        else:
            outcome.counterfactual_cost_usd = self.cost(self.large_model, prompt, completion, cached)


def format_usd(value: float) -> str:
    """The ``x-tiergate-cost-usd`` header value: fixed point, enough digits for a one-token request."""
    return f"{value:.8f}"
