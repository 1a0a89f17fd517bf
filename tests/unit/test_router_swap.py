"""The swappable router: the threshold keeps the large share across a swap; a failed load changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from routers.base import Scorer
from routers.errors import ClassifierError
from routers.swap import SwappableRouter
from routers.threshold import realised_share


class LengthScorer:
    """Scores by text length: ``reverse`` ranks the other way round and on another scale."""

    recommended_threshold: float | None = None

    def __init__(self, reverse: bool) -> None:
        self.reverse = reverse

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        return [0.2 + 0.1 * (1 - len(t) / 300) if self.reverse else len(t) / 300 for t in texts]


def build(path: str) -> Callable[[], Scorer]:
    def load() -> Scorer:
        if path == "broken":
            raise ClassifierError("no weights")
        return LengthScorer(reverse=path == "new")

    return load


async def test_promotion_keeps_the_large_share_of_recent_traffic_and_names_the_new_checkpoint() -> None:
    router = SwappableRouter("old", build)
    await router.start()
    try:
        texts = ["x" * (1 + i % 250) for i in range(400)]
        named = [await router.score_named(t) for t in texts]
        assert {name for _, name in named} == {"old"}
        old_share = realised_share([s for s, _ in named], 0.5)
        result = await router.promote("new", current_threshold=0.5)
        assert result.old == "old" and result.new.startswith("new@") and result.recent_texts == 400
        assert result.threshold is not None and router.recommended_threshold == result.threshold
        new_scores = [(await router.score_named(t)) for t in texts]
        assert {name for _, name in new_scores} == {result.new}
        assert realised_share([s for s, _ in new_scores], result.threshold) == pytest.approx(old_share, abs=0.01)
    finally:
        await router.aclose()


async def test_a_checkpoint_that_fails_to_load_is_refused_and_the_old_one_keeps_scoring() -> None:
    router = SwappableRouter("old", build)
    await router.start()
    try:
        with pytest.raises(ClassifierError, match="no weights"):
            await router.promote("broken", current_threshold=0.5)
        assert router.checkpoint == "old" and router.ready()
        assert await router.score_named("xxx") == (pytest.approx(0.01), "old")
    finally:
        await router.aclose()
