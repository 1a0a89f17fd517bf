"""A daily USD spend cap (UTC days) for background work: shadow answers, the judge."""

from __future__ import annotations

import time
from collections.abc import Callable

DAY = 86_400.0


class DailyBudget:
    """Allows work while today's spend plus its estimate stays within ``cap_usd``; resets at 00:00 UTC."""

    def __init__(self, cap_usd: float, clock: Callable[[], float] = time.time) -> None:
        self.cap_usd = cap_usd
        self.clock = clock
        self.day = self._today()
        self.spent = 0.0

    def _today(self) -> int:
        return int(self.clock() // DAY)

    def _roll(self) -> None:
        today = self._today()
        if today != self.day:
            self.day, self.spent = today, 0.0

    def allows(self, estimate_usd: float) -> bool:
        self._roll()
        return self.spent + max(estimate_usd, 0.0) <= self.cap_usd

    def add(self, usd: float) -> None:
        self._roll()
        self.spent += usd

    def day_start(self) -> float:
        return self._today() * DAY

    def next_day(self) -> float:
        return (self._today() + 1) * DAY
