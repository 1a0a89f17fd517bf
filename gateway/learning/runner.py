"""Runs the blocking label store on one writer thread: nothing waits on the disk or the network on the event loop.

Requests' rows are handed over with one cheap queue put and written in batches (one transaction, one fsync
for many rows); other calls (shadow answers, verdicts, feedback, reads) run one by one in arrival order,
so a request's row is always written before anything that refers to it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.learning.metrics import LearningMetrics
from gateway.learning.records import RequestRow
from gateway.learning.store import LabelStore

log = logging.getLogger("tiergate.learning")
T = TypeVar("T")
MAX_BATCH = 512
_STOP = object()


class _Call:
    __slots__ = ("args", "fn", "future", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[Any]) -> None:
        self.fn, self.args, self.loop, self.future = fn, args, loop, future


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StoreRunner:
    """Owns the writer thread. ``row`` is fire-and-forget (counted); ``call`` is awaited."""

    def __init__(self, store: LabelStore, metrics: LearningMetrics, max_pending: int = 10_000) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending = max_pending
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.queued = 0  # items put (event loop thread) ...
        self.done = 0  # ... and finished (writer thread): idle when equal
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="tiergate-labels", daemon=True)
            self.thread.start()

    def row(self, make: Callable[[], RequestRow]) -> None:
        """Queue one request's row; ``make`` builds it on the writer thread. Too many waiting: dropped, counted."""
        if self.queue.qsize() >= self.max_pending:
            self.metrics.store_errors["dropped"].inc()
            return
        self.queued += 1
        self.queue.put(make)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the writer thread, after everything queued before it; errors propagate."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.queued += 1
        self.queue.put(_Call(fn, args, loop, future))
        return await future

    def idle(self) -> bool:
        return self.done == self.queued

    async def close(self) -> None:
        """Write everything queued, close the store, stop the thread."""
        if self.thread is None:
            self.start()
        try:
            await self.call(self.store.close)
        finally:
            self.queue.put(_STOP)
            assert self.thread is not None
            await asyncio.to_thread(self.thread.join)
            self.thread = None

    # -- the writer thread

    def _run(self) -> None:
        pending: object | None = None
        while True:
            item = pending if pending is not None else self.queue.get()
            pending = None
            if item is _STOP:
                return
            if isinstance(item, _Call):
                self._call(item)
                self.done += 1
                continue
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    following = self.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(following, _Call) or following is _STOP:
                    pending = following
                    break
                batch.append(following)
            self._rows(batch)
            self.done += len(batch)

    def _call(self, item: _Call) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = item.fn(*item.args)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        try:
            item.loop.call_soon_threadsafe(_settle, item.future, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _rows(self, makers: list[Any]) -> None:
        rows = []
        for make in makers:
            try:
                rows.append(make())
            except Exception:
                log.exception("cannot build a label row")
        if not rows:
            return
        try:
            self.store.record_requests(rows)
        except Exception as exc:
            self.metrics.store_errors["write_failed"].inc(len(rows))
            log.warning("label store: %d request rows not written: %s", len(rows), exc)
        else:
            self.metrics.stored["request"].inc(len(rows))
