"""Runs the blocking label store on one worker thread: writes never run on the event loop, and stay in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.learning.metrics import LearningMetrics
from gateway.learning.store import LabelStore

log = logging.getLogger("tiergate.learning")
T = TypeVar("T")


class StoreRunner:
    """One thread, FIFO: a request's row is written before its shadow answer, verdict or feedback."""

    def __init__(self, store: LabelStore, metrics: LearningMetrics, max_pending: int = 10_000) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending = max_pending
        self.pending = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiergate-labels")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread and wait for it (errors propagate)."""
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.pending -= 1

    def submit(self, fn: Callable[..., Any], kind: str, *args: Any) -> None:
        """Fire and forget one write: counted as stored or failed; dropped (counted) when too many wait."""
        if self.pending >= self.max_pending:
            self.metrics.store_errors["dropped"].inc()
            return
        self.pending += 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        future.add_done_callback(lambda done: self._done(done, kind))

    def _done(self, future: asyncio.Future[Any], kind: str) -> None:
        self.pending -= 1
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self.metrics.stored[kind].inc()
        else:
            self.metrics.store_errors["write_failed"].inc()
            log.warning("label store write (%s) failed: %s", kind, error)

    async def close(self) -> None:
        """Finish the writes already queued, then close the store."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.store.close)
        self.executor.shutdown(wait=True)
