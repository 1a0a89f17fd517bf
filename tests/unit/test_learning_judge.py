"""The judge's parsing and scoring (through the real HTTP backend against a loopback aiohttp server), the daily
budget, and the answer capture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiohttp import web

from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.learning.budget import DAY, DailyBudget
from gateway.learning.capture import Capture
from gateway.learning.judge import Judge, JudgeError, JudgePrompts, parse_pair, parse_rating
from gateway.learning.loop import judge_prompts_dir, question_text
from gateway.learning.records import PendingJudgement
from gateway.pricing import PriceTable
from gateway.settings import JudgeSettings, OpenAIBackend, Price, Settings


def test_pair_scores_come_from_the_last_valid_json_object() -> None:
    assert parse_pair('A is better. {"score_a": 0.9, "score_b": 0.4}') == (0.9, 0.4)
    assert parse_pair('{"score_a": 2, "score_b": 0} then {"score_a": 1, "score_b": 0.5}') == (1.0, 0.5)
    for bad in ("no verdict", '{"score_a": 1.5, "score_b": 0.5}', '{"score_a": true, "score_b": 0}', "{oops}",
                '{"score_a": 0.5}'):
        with pytest.raises(JudgeError) as caught:
            parse_pair(bad)
        assert caught.value.kind == "garbage"


def test_ratings_map_one_to_ten_onto_zero_to_one() -> None:
    assert parse_rating("fine. Rating: [[10]]") == 1.0
    assert parse_rating("Rating: [[1]]") == 0.0
    assert parse_rating("[[3]] first, then Rating: [[5.5]]") == pytest.approx(0.5)
    for bad in ("Rating: 7", "Rating: [[0]]", "Rating: [[11]]"):
        with pytest.raises(JudgeError):
            parse_rating(bad)


def test_budget_refuses_beyond_the_cap_and_resets_each_utc_day() -> None:
    now = [10 * DAY + 100]
    budget = DailyBudget(1.0, clock=lambda: now[0])
    assert budget.allows(0.6)
    budget.add(0.6)
    assert not budget.allows(0.5)
    assert budget.allows(0.4)
    now[0] = 11 * DAY + 1
    assert budget.allows(1.0) and budget.spent == 0.0
    assert budget.next_day() == 12 * DAY
    assert not DailyBudget(0.0).allows(1e-9)


T = TypeVar("T")


@asynccontextmanager
async def judge_backend(replies: list[str], seen: list[dict[str, Any]]) -> AsyncIterator[OpenAIHTTPBackend]:
    """The real HTTP backend, started, against a loopback server answering each call with the next reply."""

    async def answer(request: web.Request) -> web.Response:
        seen.append(await request.json())
        content = replies.pop(0)
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": content}}],
                                  "usage": {"prompt_tokens": 1000, "completion_tokens": 100}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    backend = OpenAIHTTPBackend("judge", OpenAIBackend(model="judge", base_url=f"http://127.0.0.1:{port}/v1"))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.aclose()
        await runner.cleanup()


def with_judge(replies: list[str], seen: list[dict[str, Any]],
               use: Callable[[OpenAIHTTPBackend], Awaitable[T]]) -> T:
    async def run() -> T:
        async with judge_backend(replies, seen) as backend:
            return await use(backend)

    return asyncio.run(run())


PAIR = PendingJudgement("r1", "user: what is 2+2?", "4", "four")
PRICES = PriceTable({"judge": Price(prompt=1.0, completion=2.0)})


def test_pairwise_asks_in_both_orders_and_averages_each_answer_s_scores() -> None:
    seen: list[dict[str, Any]] = []
    prompts = JudgePrompts.load(judge_prompts_dir(Settings(tiers={})))
    spent: list[float] = []
    verdict = with_judge(['{"score_a": 0.6, "score_b": 1.0}', '{"score_a": 0.8, "score_b": 0.8}'], seen,
                         lambda backend: Judge(backend, JudgeSettings(), prompts, PRICES,
                                               on_spend=spent.append).grade(PAIR))
    assert (verdict.small_score, verdict.large_score) == (pytest.approx(0.7), pytest.approx(0.9))
    assert verdict.agreement is False  # large won the first order, the second was a tie
    first, second = (body["messages"][1]["content"] for body in seen)
    assert first.index("4\n") < first.index("four") and second.index("four") < second.index("4\n")
    assert seen[0]["temperature"] == 0 and seen[0]["model"] == "judge"
    assert verdict.cost_usd == pytest.approx(2 * (1000 * 1.0 + 100 * 2.0) / 1e6) == pytest.approx(sum(spent))


def test_single_mode_rates_each_answer_alone() -> None:
    seen: list[dict[str, Any]] = []
    prompts = JudgePrompts.load(judge_prompts_dir(Settings(tiers={})))
    verdict = with_judge(["ok Rating: [[4]]", "good Rating: [[10]]"], seen,
                         lambda backend: Judge(backend, JudgeSettings(mode="single"), prompts, PRICES).grade(PAIR))
    assert (verdict.small_score, verdict.large_score, verdict.agreement) == (pytest.approx(1 / 3), 1.0, None)
    assert "[The Start of Assistant's Answer]\n4\n" in seen[0]["messages"][1]["content"]


def test_the_judge_stops_at_its_budget_before_calling() -> None:
    seen: list[dict[str, Any]] = []
    prompts = JudgePrompts.load(judge_prompts_dir(Settings(tiers={})))
    with pytest.raises(JudgeError) as caught:
        with_judge([], seen, lambda backend: Judge(backend, JudgeSettings(daily_budget_usd=0.0), prompts,
                                                   PRICES).grade(PAIR))
    assert caught.value.kind == "over_budget" and seen == []


def test_capture_collects_streamed_text_and_passes_chunks_through_unchanged() -> None:
    async def chunks() -> Any:
        for piece in ("b", None, "c"):
            yield {"choices": [{"delta": {} if piece is None else {"content": piece}}]}
        yield {"choices": [], "usage": {"prompt_tokens": 1}}

    async def run(capture: Capture) -> list[Any]:
        first = {"choices": [{"delta": {"role": "assistant", "content": "a"}}]}
        followed = capture.follow(first, chunks())
        return [chunk async for chunk in followed]

    shadowed = Capture({}, {}, shadow=True)
    out = asyncio.run(run(shadowed))
    assert len(out) == 4 and shadowed.text() == "abc"
    plain = Capture({}, {}, shadow=False)
    asyncio.run(run(plain))
    assert plain.text() is None  # not shadowed: nothing collected
    answered = Capture({}, {}, shadow=True)
    answered.answer({"choices": [{"message": {"content": None, "tool_calls": []}}]})
    assert answered.text() is None


def test_the_judge_reads_the_whole_conversation_with_roles() -> None:
    text = question_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"},
                          {"role": "user", "content": [{"type": "text", "text": "and 2+2?"}]}])
    assert text == "system: be brief\n\nuser: hi\n\nassistant: hello\n\nuser: and 2+2?"


def test_a_busy_in_process_model_is_not_given_shadow_work() -> None:
    from gateway.learning.shadow import busy
    from tests.support.fault_doubles import LocalDouble

    class Local(LocalDouble):
        def __init__(self, waiting: int, running: int) -> None:
            super().__init__()
            self.waiting, self.running = waiting, running

        def queue_depth(self) -> int:
            return self.waiting

        def in_flight(self) -> int:
            return self.running

    assert not busy(Local(0, 0))
    assert busy(Local(0, 1)) and busy(Local(2, 0))
    assert not busy(LocalDouble())  # no gauges: an HTTP upstream, never considered busy


def test_loop_lag_turns_busy_while_the_loop_is_blocked_and_recovers() -> None:
    import time

    from gateway.learning.lag import LoopLag

    async def scenario() -> tuple[bool, bool, bool]:
        lag = LoopLag(threshold_s=0.02, interval_s=0.01, alpha=0.5)
        lag.start()
        await asyncio.sleep(0.05)
        quiet = lag.busy()
        for _ in range(4):  # client work hogging the loop: every tick fires ~80 ms late
            time.sleep(0.08)
            await asyncio.sleep(0)
        blocked = lag.busy()
        await asyncio.sleep(0.5)
        recovered = lag.busy()
        await lag.close()
        return quiet, blocked, recovered

    assert asyncio.run(scenario()) == (False, True, False)
    assert not LoopLag(0.0).busy()  # 0 = never yield
