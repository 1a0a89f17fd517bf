"""Event-loop lag: how late a periodic tick fires. Background learning work pauses while clients keep the loop busy."""

from __future__ import annotations

import asyncio
import time


class LoopLag:
    """A smoothed measure of how late the event loop runs callbacks; ``busy()`` above ``threshold_s``.

    A tick sleeps ``interval_s`` and measures the overshoot. When the gateway's CPU is saturated by client
    requests (or the machine by other processes), ready callbacks queue up and every tick runs late.
    """

    def __init__(self, threshold_s: float, interval_s: float = 0.05, alpha: float = 0.3) -> None:
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self.alpha = alpha
        self.lag_s = 0.0
        self.task: asyncio.Task[None] | None = None

    def busy(self) -> bool:
        return self.threshold_s > 0 and self.lag_s > self.threshold_s

    def start(self) -> None:
        if self.threshold_s > 0 and self.task is None:
            self.task = asyncio.create_task(self._tick(), name="tiergate-loop-lag")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            late = max(0.0, time.perf_counter() - started - self.interval_s)
            self.lag_s += self.alpha * (late - self.lag_s)
