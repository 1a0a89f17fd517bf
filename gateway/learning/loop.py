"""The learning loop of one app: records answered requests, shadows a share of them, judges the pairs, and
takes user feedback. It is an accounting sink; the api hands it a :class:`Capture` per routed request."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from gateway.accounting import RequestOutcome
from gateway.backends.base import Backend
from gateway.learning.budget import DailyBudget
from gateway.learning.capture import Capture
from gateway.learning.judge import Judge, JudgeError, JudgePrompts
from gateway.learning.lag import LoopLag
from gateway.learning.metrics import Families, LearningMetrics
from gateway.learning.open_store import open_store
from gateway.learning.records import Feedback, PendingJudgement, RequestRow
from gateway.learning.runner import StoreRunner
from gateway.learning.shadow import ShadowAnswer, ShadowJob, ShadowSender
from gateway.learning.store import LabelStore, StoreError
from gateway.pricing import PriceTable
from gateway.settings import DEFAULT_CONFIG, Settings
from routers.base import RouteDecision, Tier
from routers.features import content_text, head_tail, routing_text

log = logging.getLogger("tiergate.learning")
SHADOW_HEADER = "x-tiergate-shadow"
RECENT_IDS = 10_000  # answered ids kept in memory, so feedback right after an answer never races the store
QUESTION_CHARS = 16_000


class UnknownRequestError(LookupError):
    """No answered request with this id (for this key)."""


def question_text(messages: Any) -> str:
    """The conversation as the judge reads it: every turn, role first, bounded length."""
    turns = []
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict):
            text = content_text(message.get("content")).strip()
            if text:
                turns.append(f"{message.get('role', 'user')}: {text}")
    return head_tail("\n\n".join(turns), QUESTION_CHARS)


class LearningLoop:
    """Owns the label store (on its thread), the shadow sender and the judge worker. Started and closed by the
    app's lifespan; every failure inside it is counted and logged, never seen by a client."""

    def __init__(self, settings: Settings, backends: dict[Tier, Backend], prices: PriceTable, store: LabelStore,
                 metrics: LearningMetrics, judge_backend: Backend | None = None,
                 prompts_dir: Path | None = None) -> None:
        self.settings = settings
        self.cfg = settings.learning
        include = self.cfg.include_prompts
        self.include_prompts = settings.request_log.include_prompts if include is None else include
        self.backends = backends
        self.store = store
        self.metrics = metrics
        self.runner = StoreRunner(store, metrics, self.cfg.store_queue_size)
        self.random = random.Random(self.cfg.seed)
        self.captures: dict[int, Capture] = {}
        self.recent: OrderedDict[str, str] = OrderedDict()
        self.lag = LoopLag(self.cfg.max_loop_lag_ms / 1000)
        self.shadow = ShadowSender(self.cfg, backends, prices, metrics, self._shadowed, lag=self.lag)
        judge_cfg = self.cfg.judge
        self.owns_judge_backend = judge_backend is not None
        self.judge_backend = judge_backend or backends.get(judge_cfg.tier) or next(iter(backends.values()))
        self.prompts = JudgePrompts.load(prompts_dir or judge_prompts_dir(settings))
        self.judge = Judge(self.judge_backend, judge_cfg, self.prompts, prices, DailyBudget(judge_cfg.daily_budget_usd),
                           on_spend=metrics.spend["judge"].inc)
        self.wake = asyncio.Event()
        self.judge_task: asyncio.Task[None] | None = None
        self.judging = 0
        self.claimed: set[str] = set()  # leased pairs being judged now

    # -- lifespan

    async def start(self) -> None:
        self.runner.start()
        try:
            await self.runner.call(self.store.open)
        except StoreError as exc:  # the gateway still serves; every write is counted as failed until fixed
            log.error("learning: cannot open the label store: %s", exc)
        if self.owns_judge_backend:
            await self.judge_backend.start()
        try:
            shadow_spent, judge_spent = await self.runner.call(self.store.spent_since, self.shadow.budget.day_start())
        except StoreError:
            shadow_spent = judge_spent = 0.0
        self.shadow.budget.add(shadow_spent)  # the caps hold across restarts (and across replicas on PostgreSQL)
        self.judge.budget.add(judge_spent)
        self.lag.start()
        self.shadow.start()
        self.judge_task = asyncio.create_task(self._judge_forever(), name="tiergate-judge")
        log.info("learning: store %s, shadow rate %.2f, judge %s (%s), prompts %s", self.store.url,
                 self.cfg.shadow_rate, self.judge_backend.model, self.cfg.judge.mode,
                 "kept" if self.include_prompts else "hashed")

    async def close(self) -> None:
        await self.shadow.close()
        if self.judge_task is not None:
            self.judge_task.cancel()
            await asyncio.gather(self.judge_task, return_exceptions=True)
        for request_id in sorted(self.claimed):  # interrupted: due again at once, not when the lease runs out
            await self._store_quietly(self.store.postpone_judgement, request_id, 0.0, "interrupted by shutdown")
        self.claimed.clear()
        await self.lag.close()
        if self.owns_judge_backend:
            await self.judge_backend.aclose()
        await self.runner.close()

    # -- the request path (cheap, on the event loop)

    def capture(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome,
                decision: RouteDecision) -> Capture:
        """Called once the tier is decided; the capture follows the answer and is consumed by :meth:`record`."""
        shadow = self._should_shadow(body, headers, outcome, decision)
        auth = {"authorization": headers["authorization"]} if shadow and "authorization" in headers else {}
        capture = Capture(body, auth, shadow)
        self.captures[id(outcome)] = capture
        return capture

    def _should_shadow(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome,
                       decision: RouteDecision) -> bool:
        rate = self.cfg.shadow_rate
        if rate <= 0 or decision.reason == "explicit_model" or len(self.backends) < 2:
            return False
        if body.get("tools") or body.get("functions") or (body.get("n") or 1) != 1:
            return False
        if headers.get(SHADOW_HEADER, "").strip().lower() in ("off", "false", "0", "no"):
            return False
        opted = outcome.principal.shadow if outcome.principal is not None else None
        if opted is False or (self.cfg.shadow_keys == "opted_in" and opted is not True):
            return False
        return rate >= 1.0 or self.random.random() < rate

    def record(self, outcome: RequestOutcome) -> None:
        """The accounting sink: every finished request passes here once, priced."""
        capture = self.captures.pop(id(outcome), None)
        if capture is None or outcome.outcome != "success" or outcome.tier not in self.backends:
            return
        key_id = outcome.principal.name if outcome.principal is not None else "anonymous"
        self.recent[outcome.request_id] = key_id
        if len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)
        self.runner.row(lambda: self._row(outcome, capture, key_id))  # built and written off the event loop
        answer = capture.text()
        if capture.shadow and answer is not None and not outcome.fallback:
            tier: Tier = "small" if outcome.tier == "small" else "large"
            self.shadow.offer(ShadowJob(outcome.request_id, capture.body, capture.client_headers, tier, answer,
                                        outcome.prompt_tokens, outcome.completion_tokens))

    def _row(self, outcome: RequestOutcome, capture: Capture, key_id: str) -> RequestRow:
        text = routing_text(capture.body.get("messages") or [],
                            include_system=self.settings.routing.include_system_prompt)
        decision = outcome.decision
        return RequestRow(outcome.request_id, outcome.wall_time, key_id, hashlib.sha256(text.encode()).hexdigest(),
                          text if self.include_prompts else None, decision.tier if decision else None,
                          decision.reason if decision else None, decision.score if decision else None,
                          decision.threshold if decision else None, outcome.tier or "", outcome.model or "",
                          outcome.prompt_tokens, outcome.completion_tokens, outcome.cost_usd)

    # -- background work

    async def _shadowed(self, result: ShadowAnswer) -> None:
        job = result.job
        pending = None
        if result.text is not None:
            small, large = ((job.answer, result.text) if job.answered_tier == "small" else (result.text, job.answer))
            pending = PendingJudgement(job.request_id, question_text(job.body.get("messages")), small, large)
        try:
            await self.runner.call(self.store.record_shadow, result.row, pending)
        except Exception as exc:
            self.metrics.store_errors["write_failed"].inc()
            log.warning("cannot store the shadow answer of %s: %s", job.request_id, exc)
            return
        self.metrics.stored["shadow"].inc()
        if pending is not None:
            self.wake.set()

    async def _judge_forever(self) -> None:
        judge = self.cfg.judge
        lease = judge.timeout_s * 2 + 60
        while True:
            self.wake.clear()
            if self.lag.busy():  # the pairs wait in the store; clients come first
                await asyncio.sleep(judge.poll_s)
                continue
            try:
                due = await self.runner.call(self.store.claim_judgements, time.time(), judge.max_concurrency * 2, lease)
            except Exception as exc:
                log.warning("cannot read the judge queue: %s", exc)
                due = []
            if due:
                self.judging += len(due)
                self.claimed.update(pair.request_id for pair in due)
                try:
                    await asyncio.gather(*(self._judge_one(pair) for pair in due))
                finally:
                    self.judging -= len(due)
                continue
            try:
                await asyncio.wait_for(self.wake.wait(), judge.poll_s)
            except TimeoutError:
                pass

    async def _judge_one(self, pair: PendingJudgement) -> None:
        await self._judge_claimed(pair)
        self.claimed.discard(pair.request_id)  # not on cancellation: close() hands the lease back

    async def _judge_claimed(self, pair: PendingJudgement) -> None:
        judge = self.cfg.judge
        try:
            verdict = await self.judge.grade(pair)
        except JudgeError as error:
            self.metrics.judge_failures[error.kind].inc()
            if error.kind == "over_budget":
                next_at = self.judge.budget.next_day()
            else:
                next_at = time.time() + min(judge.retry_max_s, judge.retry_base_s * 2 ** max(0, pair.attempts - 1))
            log.info("judging %s failed (%s, attempt %d); retrying later", pair.request_id, error.kind, pair.attempts)
            await self._store_quietly(self.store.postpone_judgement, pair.request_id, next_at, str(error))
            return
        except Exception:
            self.metrics.judge_failures["error"].inc()
            log.exception("judging %s failed inside the gateway", pair.request_id)
            await self._store_quietly(self.store.postpone_judgement, pair.request_id,
                                      time.time() + judge.retry_base_s, "internal error")
            return
        won = "small_as_good" if verdict.small_score + judge.tie_margin >= verdict.large_score else "large_better"
        self.metrics.verdicts[won].inc()
        if await self._store_quietly(self.store.record_verdict, verdict):
            self.metrics.stored["verdict"].inc()

    async def _store_quietly(self, fn: Any, *args: Any) -> bool:
        try:
            await self.runner.call(fn, *args)
        except Exception as exc:
            self.metrics.store_errors["write_failed"].inc()
            log.warning("label store write failed: %s", exc)
            return False
        return True

    def idle(self) -> bool:
        """No shadow call or judgement in progress (tests wait for this)."""
        return self.shadow.idle() and self.judging == 0 and self.runner.idle()

    # -- feedback

    async def feedback(self, request_id: str, key_id: str, score: float) -> None:
        """Attach a user's score to an answered request of the same key; raises UnknownRequestError."""
        owner = self.recent.get(request_id)
        if owner is None:
            owner = await self.runner.call(self.store.owner, request_id)
        if owner is None or owner != key_id:
            raise UnknownRequestError(request_id)
        await self.runner.call(self.store.add_feedback, Feedback(request_id, time.time(), key_id, score))
        self.metrics.stored["feedback"].inc()


def judge_prompts_dir(settings: Settings) -> Path:
    """``learning.judge.prompts_dir``: absolute, or beside the loaded config file, else the shipped ``config/``."""
    path = Path(settings.learning.judge.prompts_dir).expanduser()
    if path.is_absolute():
        return path
    base = Path(settings.prices_file).parent if settings.prices_file and Path(settings.prices_file).is_absolute() \
        else DEFAULT_CONFIG.parent
    candidate = base / path
    return candidate if candidate.is_dir() else DEFAULT_CONFIG.parent / path


def build_learning(settings: Settings, backends: dict[Tier, Backend], prices: PriceTable,
                   families: Families | None = None) -> LearningLoop | None:
    """The loop ``settings.learning`` asks for, or None when learning is off."""
    if not settings.learning.active():
        return None
    judge_backend = None
    if settings.learning.judge.backend is not None:
        from gateway.backends.openai_http import OpenAIHTTPBackend

        judge_backend = OpenAIHTTPBackend("judge", settings.learning.judge.backend)
    return LearningLoop(settings, backends, prices, open_store(settings.learning.store), LearningMetrics(families),
                        judge_backend)
