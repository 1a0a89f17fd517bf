"""A classifier router whose checkpoint can be replaced while it serves: load beside, swap between batches.

The new checkpoint loads in its own worker (a second :class:`routers.batcher.BatchingRouter`), so the old one
keeps scoring meanwhile; the swap is one assignment on the event loop, so every request is scored wholly by
the old or wholly by the new checkpoint, and the old worker finishes what it already queued before it stops.
A checkpoint that fails to load is refused and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from routers.base import RouteDecision, Scorer, decide
from routers.batcher import BatchingRouter
from routers.errors import ClassifierError, ClassifierNotReadyError
from routers.options import CLASSIFIER_DEFAULTS, ClassifierOptions
from routers.threshold import realised_share, threshold_for_share

MIN_RECENT = 50  # fewer recent texts than this: the new checkpoint's own recommended threshold is used


def checkpoint_name(path: str) -> str:
    """``builtin``, or the directory name plus a short hash of its metadata (safe for a header and a metric)."""
    if path == "builtin":
        return "builtin"
    directory = Path(path)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", directory.resolve().name)[:48] or "checkpoint"
    meta = directory / "metadata.json"
    digest = hashlib.sha256(meta.read_bytes()).hexdigest()[:8] if meta.exists() else "nometa"
    return f"{name}@{digest}"


@dataclass(frozen=True, slots=True)
class Promotion:
    """What a promotion did: the checkpoints, and the threshold kept at the same large share."""

    old: str
    new: str
    threshold: float | None
    large_share: float | None
    recent_texts: int


class SwappableRouter:
    """Implements :class:`routers.base.Router` over one :class:`BatchingRouter` at a time, replaceable live.

    ``options`` gives the batching (its ``path`` is not read: the checkpoint is ``path``, and a promotion changes it).
    """

    reads_text = True

    def __init__(self, path: str, build: Callable[[str], Callable[[], Scorer]], *,
                 options: ClassifierOptions = CLASSIFIER_DEFAULTS, name: str = "classifier",
                 recent: int = 1000) -> None:
        self.name = name
        self._build = build
        self._options = options
        self._path = path
        self._current = self._router(path)
        self.checkpoint = checkpoint_name(path) if Path(path).exists() or path == "builtin" else path
        self.promoted_threshold: float | None = None
        self._recent: deque[tuple[str, float]] = deque(maxlen=recent)
        self._lock = asyncio.Lock()

    def _router(self, path: str) -> BatchingRouter:
        options = self._options
        return BatchingRouter(
            self._build(path),
            name=self.name,
            max_batch=options.max_batch,
            batch_wait_ms=options.batch_wait_ms,
            queue_size=options.queue_size,
            cache_size=options.cache_size,
        )

    @property
    def path(self) -> str:
        return self._path

    @property
    def checkpoint_id(self) -> str:
        """The serving checkpoint's name (the ``tiergate_build_info`` metric's ``classifier_checkpoint``)."""
        return self.checkpoint

    async def start(self) -> None:
        await self._current.start()

    def ready(self) -> bool:
        return self._current.ready()

    def queue_depth(self) -> int:
        return self._current.queue_depth()

    @property
    def recommended_threshold(self) -> float | None:
        if self.promoted_threshold is not None:
            return self.promoted_threshold
        return self._current.recommended_threshold

    def decide(self, score: float, threshold: float, checkpoint: str | None = None) -> RouteDecision:
        return decide(score, threshold, checkpoint)

    async def score(self, text: str) -> float:
        return (await self.score_named(text))[0]

    async def score_named(self, text: str) -> tuple[float, str]:
        """The score and the name of the checkpoint that produced it (read together, before any await)."""
        router, name = self._current, self.checkpoint
        score = await router.score(text)
        self._recent.append((text, score))
        return score, name

    async def promote(self, path: str, current_threshold: float | None = None) -> Promotion:
        """Load ``path`` beside the serving checkpoint and swap it in; raises :class:`ClassifierError` on failure.

        The threshold is re-derived so that the recent requests would go large in the same share as under
        ``current_threshold`` with the old checkpoint.
        """
        if not self.ready():
            raise ClassifierNotReadyError("the router is not serving yet; promote after it has started")
        async with self._lock:
            try:
                name = checkpoint_name(path)
            except OSError as exc:
                raise ClassifierError(f"cannot read checkpoint {path}: {exc}") from exc
            candidate = self._router(path)
            await candidate.start()  # raises ClassifierError; the old router was never touched
            recent = list(self._recent)
            threshold, share = None, None
            try:
                if current_threshold is not None and len(recent) >= MIN_RECENT:
                    share = realised_share([s for _, s in recent], current_threshold)
                    new_scores = await asyncio.gather(*(candidate.score(t) for t, _ in recent))
                    threshold = threshold_for_share(list(new_scores), share)
            except ClassifierError:
                await candidate.aclose()
                raise
            old, old_name = self._current, self.checkpoint
            self._current, self.checkpoint, self._path = candidate, name, path
            self.promoted_threshold = threshold
            self._recent.clear()
            await old.aclose()  # its worker scores what it already queued, then stops
            return Promotion(old_name, name, threshold, share, len(recent))

    async def aclose(self) -> None:
        async with self._lock:
            await self._current.aclose()
