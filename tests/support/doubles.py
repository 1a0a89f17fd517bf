"""Test doubles: a router with a fixed (or scripted) score."""

from __future__ import annotations

from routers.base import RouteDecision, decide


class FixedRouter:
    """Scores every text the same, or by the first keyword of ``by_keyword`` found in it."""

    name = "fixed-test"
    reads_text = True

    def __init__(self, score: float = 0.1, by_keyword: dict[str, float] | None = None,
                 fail: bool = False, delay: float = 0.0) -> None:
        self.value = score
        self.by_keyword = by_keyword or {}
        self.fail = fail
        self.delay = delay
        self.seen: list[str] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    def ready(self) -> bool:
        return self.started

    async def score(self, text: str) -> float:
        import asyncio

        self.seen.append(text)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("classifier broke")
        for word, value in self.by_keyword.items():
            if word in text:
                return value
        return self.value

    async def aclose(self) -> None:
        self.started = False

    @property
    def recommended_threshold(self) -> float | None:
        return None

    def decide(self, score: float, threshold: float, checkpoint: str | None = None) -> RouteDecision:
        return decide(score, threshold, checkpoint)
