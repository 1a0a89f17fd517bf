"""The judge: grades a shadow pair with an OpenAI-compatible model, pairwise in both orders or one answer at a time.

Pairwise (the default) asks twice, with the answers swapped, because judges favour one position; each
answer's score is the mean of its two scores. Single mode rates each answer alone on MT-Bench's 1-10
scale, mapped to [0, 1]. Prompts are files (``config/judge/``), read once at start.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import orjson

from gateway.backends.base import Backend
from gateway.errors import GatewayError, UpstreamTimeoutError
from gateway.learning.budget import DailyBudget
from gateway.learning.records import PendingJudgement, Verdict
from gateway.pricing import PriceTable
from gateway.settings import JudgeSettings

PROMPT_FILES = ("pairwise_system.txt", "pairwise_user.txt", "single_system.txt", "single_user.txt")
JSON_OBJECT = re.compile(r"\{[^{}]*\}")
RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
CHARS_PER_TOKEN = 4  # a budget estimate before the call; the real usage is what is spent


class JudgeError(Exception):
    """A judgement that did not happen; ``kind`` is a metric label (error, timeout, garbage, over_budget)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class JudgePrompts:
    pairwise_system: str
    pairwise_user: Template
    single_system: str
    single_user: Template

    @classmethod
    def load(cls, directory: Path) -> JudgePrompts:
        missing = [name for name in PROMPT_FILES if not (directory / name).is_file()]
        if missing:
            from gateway.settings import ConfigError

            raise ConfigError(f"learning.judge.prompts_dir {directory} lacks {', '.join(missing)}")
        text = {name: (directory / name).read_text(encoding="utf-8") for name in PROMPT_FILES}
        return cls(text["pairwise_system.txt"].strip(), Template(text["pairwise_user.txt"]),
                   text["single_system.txt"].strip(), Template(text["single_user.txt"]))


def parse_pair(text: str) -> tuple[float, float]:
    """The last ``{"score_a": x, "score_b": y}`` object in a reply, both in [0, 1]."""
    for candidate in reversed(JSON_OBJECT.findall(text)):
        try:
            data = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict):
            a, b = data.get("score_a"), data.get("score_b")
            if isinstance(a, int | float) and isinstance(b, int | float) and _unit(a) and _unit(b):
                return float(a), float(b)
    raise JudgeError("garbage", f"no score_a/score_b object in the judge's reply: {text[:200]!r}")


def parse_rating(text: str) -> float:
    """The last ``[[n]]`` rating, 1-10, as a score in [0, 1]."""
    found = RATING.findall(text)
    if found:
        value = float(found[-1])
        if 1.0 <= value <= 10.0:
            return (value - 1.0) / 9.0
    raise JudgeError("garbage", f"no [[1-10]] rating in the judge's reply: {text[:200]!r}")


def _unit(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value <= 1.0)


def _content(answer: dict[str, Any]) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise JudgeError("garbage", "the judge's reply has no text content")
    return content


def _winner(a: float, b: float) -> int:
    return 0 if abs(a - b) < 1e-9 else (1 if a > b else -1)


class Judge:
    """Grades pairs with ``backend``, within its own concurrency and daily spend caps."""

    def __init__(self, backend: Backend, settings: JudgeSettings, prompts: JudgePrompts, prices: PriceTable,
                 budget: DailyBudget | None = None, on_spend: Callable[[float], None] | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.prompts = prompts
        self.prices = prices
        self.budget = budget or DailyBudget(settings.daily_budget_usd)
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.on_spend = on_spend

    async def grade(self, pair: PendingJudgement) -> Verdict:
        async with self.slots:
            cost = [0.0]
            if self.settings.mode == "pairwise":
                a1, b1 = parse_pair(await self._ask(self.prompts.pairwise_system, self.prompts.pairwise_user.substitute(
                    question=pair.question, answer_a=pair.small_answer, answer_b=pair.large_answer), cost))
                a2, b2 = parse_pair(await self._ask(self.prompts.pairwise_system, self.prompts.pairwise_user.substitute(
                    question=pair.question, answer_a=pair.large_answer, answer_b=pair.small_answer), cost))
                small, large = (a1 + b2) / 2, (b1 + a2) / 2
                agreement: bool | None = _winner(a1, b1) == _winner(b2, a2)
            else:
                small = parse_rating(await self._ask(self.prompts.single_system, self.prompts.single_user.substitute(
                    question=pair.question, answer=pair.small_answer), cost))
                large = parse_rating(await self._ask(self.prompts.single_system, self.prompts.single_user.substitute(
                    question=pair.question, answer=pair.large_answer), cost))
                agreement = None
            return Verdict(pair.request_id, small, large, self.settings.mode, self.backend.model, agreement, cost[0])

    async def _ask(self, system: str, user: str, cost: list[float]) -> str:
        model = self.backend.model
        estimate = self.prices.cost(model, (len(system) + len(user)) // CHARS_PER_TOKEN + 16, self.settings.max_tokens)
        if not self.budget.allows(estimate):
            raise JudgeError("over_budget", f"the judge's daily budget ({self.budget.cap_usd} USD) is spent")
        body = {"model": model, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                "temperature": 0, "max_tokens": self.settings.max_tokens}
        try:
            answer = await asyncio.wait_for(self.backend.complete(body, None), self.settings.timeout_s)
        except (TimeoutError, UpstreamTimeoutError) as exc:
            raise JudgeError("timeout", f"the judge timed out: {exc}") from None
        except GatewayError as exc:
            raise JudgeError("error", f"the judge failed: {exc.message}") from None
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        spent = self.prices.cost(model, _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))
        self.budget.add(spent)
        if self.on_spend is not None:
            self.on_spend(spent)
        cost[0] += spent
        return _content(answer)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
