"""The share controller with its window in Redis: every worker and replica steers toward one realised share."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from redis.asyncio import Redis

from gateway.shared_state.base import SharedStateUnavailable, Shield
from routers.threshold import ShareController, ShareWindow

log = logging.getLogger("tiergate.shared_state")


class SharedShareController(ShareController):
    """A :class:`routers.threshold.ShareController` whose window is the last ``window`` routed requests of
    every process sharing the Redis.

    Decisions use the local copy of the window (no Redis call per request); every ``sync_s`` the
    observations made here since the last sync are appended to the shared lists and the merged window is read
    back in the same pipeline. While Redis is unavailable the controller keeps steering on its local window.
    """

    def __init__(self, redis: Redis, shield: Shield, prefix: str, target: float, window: int = 1000,
                 initial_threshold: float = 0.5, sync_s: float = 0.5) -> None:
        super().__init__(target, window, initial_threshold)
        self.redis = redis
        self.shield = shield
        self.sync_s = sync_s
        self._scores_key = prefix + "share:scores"
        self._decisions_key = prefix + "share:decisions"
        self._new_scores: list[float] = []
        self._new_decisions: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def observe(self, score: float) -> bool:
        large = super().observe(score)
        self._new_scores.append(score)
        self._new_decisions.append(int(large))
        return large

    async def sync(self) -> None:
        """Push local observations, pull the shared window (one round trip)."""
        scores, decisions = self._new_scores, self._new_decisions
        self._new_scores, self._new_decisions = [], []
        score_cap = self._scores.maxlen or self.window

        async def exchange() -> list[object]:
            pipe = self.redis.pipeline(transaction=True)
            if scores:
                pipe.rpush(self._scores_key, *(repr(s) for s in scores))
                pipe.ltrim(self._scores_key, -score_cap, -1)
                pipe.rpush(self._decisions_key, *decisions)
                pipe.ltrim(self._decisions_key, -self.window, -1)
            pipe.lrange(self._scores_key, 0, -1)
            pipe.lrange(self._decisions_key, 0, -1)
            return list(await pipe.execute())

        try:
            replies = await self.shield.call("share_sync", exchange)
        except SharedStateUnavailable:
            # Keep what was not pushed (bounded by the window) for the next sync.
            self._new_scores = (scores + self._new_scores)[-score_cap:]
            self._new_decisions = (decisions + self._new_decisions)[-self.window:]
            return
        shared_scores, shared_decisions = replies[-2], replies[-1]
        assert isinstance(shared_scores, list) and isinstance(shared_decisions, list)
        # Observations made here while the round trip was out are re-applied on top of the shared window.
        pending_scores = [float(s) for s in shared_scores] + self._new_scores
        pending_decisions = [int(d) for d in shared_decisions] + self._new_decisions
        self._scores = deque(pending_scores, maxlen=score_cap)
        self.decisions = ShareWindow(self.window, (bool(d) for d in pending_decisions))
        self._threshold = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync()
            except Exception:  # never let the loop die: the controller would silently turn local
                log.exception("share window sync failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.sync()
