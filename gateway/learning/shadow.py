"""Shadow answers: the tier that did not answer gets the same request in the background, within caps.

The client's request is finished before a shadow job exists; a job waits in a bounded queue (a full
queue drops the job and counts it) for one of ``shadow_max_concurrency`` workers, is skipped when the day's
shadow budget would be exceeded, and always calls without streaming.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.backends.base import Backend, QueuedBackend
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeoutError
from gateway.learning.budget import DailyBudget
from gateway.learning.lag import LoopLag
from gateway.learning.metrics import LearningMetrics
from gateway.learning.records import ShadowRow
from gateway.pricing import PriceTable
from gateway.settings import LearningSettings
from routers.base import Tier

log = logging.getLogger("tiergate.learning")
STREAM_ONLY = ("stream", "stream_options")


@dataclass(slots=True)
class ShadowJob:
    request_id: str
    body: dict[str, Any]
    client_headers: dict[str, str]
    answered_tier: Tier
    answer: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class ShadowAnswer:
    job: ShadowJob
    row: ShadowRow
    text: str | None  # None when the call failed


def answer_text(answer: dict[str, Any]) -> str | None:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def busy(backend: Backend) -> bool:
    """An in-process model already generating or queueing for clients: a shadow call would take their slot."""
    return isinstance(backend, QueuedBackend) and bool(backend.queue_depth() or backend.in_flight())


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class ShadowSender:
    """Owns the queue and workers; ``deliver`` receives every finished shadow call (answered or failed)."""

    def __init__(self, settings: LearningSettings, backends: dict[Tier, Backend], prices: PriceTable,
                 metrics: LearningMetrics, deliver: Callable[[ShadowAnswer], Awaitable[None]],
                 budget: DailyBudget | None = None, lag: LoopLag | None = None) -> None:
        self.settings = settings
        self.backends = backends
        self.prices = prices
        self.metrics = metrics
        self.deliver = deliver
        self.budget = budget or DailyBudget(settings.shadow_daily_budget_usd)
        self.lag = lag or LoopLag(0.0)
        self.queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=max(1, settings.shadow_queue_size))
        self.workers: list[asyncio.Task[None]] = []
        self.busy = 0

    def other(self, tier: Tier) -> Tier | None:
        return next((t for t in self.backends if t != tier), None)

    def offer(self, job: ShadowJob) -> bool:
        """Queue a job without waiting; a full queue drops it (counted)."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.shadow["dropped"].inc()
            return False
        return True

    def start(self) -> None:
        for index in range(self.settings.shadow_max_concurrency):
            self.workers.append(asyncio.create_task(self._work(), name=f"tiergate-shadow-{index}"))

    async def close(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers.clear()
        while not self.queue.empty():  # not sent: counted as dropped, never silently lost
            self.queue.get_nowait()
            self.metrics.shadow["dropped"].inc()

    def idle(self) -> bool:
        return self.queue.empty() and self.busy == 0

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self.busy += 1
            try:
                await self.send(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one job must not stop the worker
                log.exception("shadow job %s failed inside the gateway", job.request_id)
            finally:
                self.busy -= 1

    async def send(self, job: ShadowJob) -> None:
        tier = self.other(job.answered_tier)
        if tier is None:
            return
        backend = self.backends[tier]
        if self.lag.busy():  # clients keep the gateway busy: this sample is skipped, not delayed
            self.metrics.shadow["busy"].inc()
            return
        if busy(backend):
            self.metrics.shadow["dropped"].inc()
            return
        estimate = self.prices.cost(backend.model, job.prompt_tokens, job.completion_tokens)
        if not self.budget.allows(estimate):
            self.metrics.shadow["over_budget"].inc()
            return
        body = {k: v for k, v in job.body.items() if k not in STREAM_ONLY}
        try:
            answer = await asyncio.wait_for(backend.complete(body, job.client_headers),
                                            self.settings.shadow_timeout_s)
        except (TimeoutError, UpstreamTimeoutError):
            self.metrics.shadow["timeout"].inc()
            await self.deliver(ShadowAnswer(job, ShadowRow(job.request_id, tier, backend.model, "failed",
                                                           error="timeout"), None))
            return
        except GatewayError as error:
            self.metrics.shadow["failed"].inc()
            kind = (error.kind if isinstance(error, UpstreamError) else None) or error.code or "error"
            await self.deliver(ShadowAnswer(job, ShadowRow(job.request_id, tier, backend.model, "failed",
                                                           error=str(kind)), None))
            return
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        cost = self.prices.cost(backend.model, prompt, completion)
        self.budget.add(cost)
        self.metrics.spend["shadow"].inc(cost)
        text = answer_text(answer)
        self.metrics.shadow["answered" if text is not None else "failed"].inc()
        status = "answered" if text is not None else "failed"
        row = ShadowRow(job.request_id, tier, backend.model, status, prompt, completion, cost,
                        None if text is not None else "no_text")
        await self.deliver(ShadowAnswer(job, row, text))
