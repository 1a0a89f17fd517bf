"""The micro-batching router and the router registry, with scorer doubles and the tiny encoder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from routers.batcher import BatchingRouter
from routers.errors import ClassifierError, ClassifierNotReadyError, ClassifierOverloadedError
from routers.registry import build_router
from tests.support.tiny_encoder import build_tiny_encoder


class RecordingScorer:
    """Scores by text length; records batch sizes and the threads it ran on."""

    recommended_threshold: float | None = None

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.fail = fail

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        self.batches.append(len(texts))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return [min(1.0, len(t) / 100) for t in texts]


async def test_concurrent_requests_are_scored_in_batches_on_one_dedicated_thread() -> None:
    scorer = RecordingScorer(delay_s=0.01)
    router = BatchingRouter(lambda: scorer, max_batch=8, batch_wait_ms=5)
    await router.start()
    assert router.ready()
    scores = await asyncio.gather(*(router.score("x" * i) for i in range(32)))
    await router.aclose()
    assert scores == [pytest.approx(i / 100) for i in range(32)]
    assert max(scorer.batches) == 8 and len(scorer.batches) < 32
    assert scorer.threads == {"tiergate-classifier"}
    assert not router.ready()


async def test_a_lone_request_is_not_held_back_for_companions() -> None:
    """The batch window only opens once traffic is concurrent (a 1 s window would otherwise show)."""
    scorer = RecordingScorer()
    router = BatchingRouter(lambda: scorer, max_batch=8, batch_wait_ms=1000)
    await router.start()
    started = time.perf_counter()
    for i in range(3):
        await router.score("x" * i)
    lone = time.perf_counter() - started
    burst = await asyncio.gather(*(router.score("y" * i) for i in range(6)))
    await router.aclose()
    assert lone < 0.5, lone
    assert scorer.batches[:3] == [1, 1, 1] and len(burst) == 6


async def test_full_queue_raises_overloaded_immediately() -> None:
    scorer = RecordingScorer(delay_s=0.2)
    router = BatchingRouter(lambda: scorer, max_batch=1, batch_wait_ms=0, queue_size=2, cache_size=0)
    await router.start()
    first = asyncio.ensure_future(router.score("busy"))
    await asyncio.sleep(0.05)  # the worker is now inside score_batch
    queued = [asyncio.ensure_future(router.score(f"q{i}")) for i in range(2)]
    await asyncio.sleep(0)
    started = time.perf_counter()
    with pytest.raises(ClassifierOverloadedError):
        await router.score("one too many")
    assert time.perf_counter() - started < 0.05
    assert router.queue_depth() == 2
    await asyncio.gather(first, *queued)
    await router.aclose()


async def test_identical_texts_hit_the_cache() -> None:
    scorer = RecordingScorer()
    router = BatchingRouter(lambda: scorer, cache_size=2)
    await router.start()
    assert await router.score("same") == await router.score("same")
    assert sum(scorer.batches) == 1
    await router.aclose()


async def test_scorer_failure_becomes_classifier_error_and_worker_survives() -> None:
    scorer = RecordingScorer(fail=True)
    router = BatchingRouter(lambda: scorer)
    await router.start()
    with pytest.raises(ClassifierError, match="boom"):
        await router.score("a")
    scorer.fail = False
    assert await router.score("b") == pytest.approx(0.01)
    await router.aclose()


async def test_load_failure_is_raised_by_start_and_score_before_start_raises() -> None:
    def broken() -> RecordingScorer:
        raise OSError("no weights")

    router = BatchingRouter(broken)
    with pytest.raises(ClassifierNotReadyError):
        await router.score("a")
    with pytest.raises(ClassifierError, match="no weights"):
        await router.start()
    assert not router.ready()


async def test_registry_builds_baselines_by_name() -> None:
    for name, expected in (("always-small", 0.0), ("always-large", 1.0)):
        router = build_router(name)
        await router.start()
        assert router.ready() and router.name == name
        assert await router.score("anything") == expected
        await router.aclose()
    a, b = build_router("random", seed=7), build_router("random", seed=7)
    await a.start()
    await b.start()
    first = [await a.score("x") for _ in range(5)]
    assert first == [await b.score("x") for _ in range(5)]
    assert all(0.0 <= s < 1.0 for s in first) and len(set(first)) == 5
    with pytest.raises(ValueError, match="unknown router"):
        build_router("keywords")
    with pytest.raises(ValueError, match="unknown classifier options"):
        build_router("classifier", nonsense=1)


async def test_classifier_router_scores_with_a_tiny_encoder_directory(tmp_path: Path) -> None:
    path = build_tiny_encoder(tmp_path / "enc")
    router = build_router(
        "classifier",
        path=str(path),
        max_length=16,
        max_batch=4,
        batch_wait_ms=1,
        queue_size=8,
        cache_size=10,
        threads=1,
        timeout_s=2.0,
    )
    await router.start()
    scores = await asyncio.gather(router.score("hello"), router.score("prove that theorem " * 50))
    assert all(0.0 <= s <= 1.0 for s in scores)
    await router.aclose()


async def test_classifier_router_start_fails_loudly_on_a_missing_directory(tmp_path: Path) -> None:
    router = build_router("classifier", path=str(tmp_path / "nowhere"))
    with pytest.raises(ClassifierError, match="not found"):
        await router.start()
