"""Async micro-batching router: one worker thread scores queued texts in small batches, with an LRU cache."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from routers.base import Scorer
from routers.errors import ClassifierError, ClassifierNotReadyError, ClassifierOverloadedError

_STOP = object()


class _Job:
    __slots__ = ("future", "loop", "text")

    def __init__(self, text: str, future: asyncio.Future[float], loop: asyncio.AbstractEventLoop) -> None:
        self.text = text
        self.future = future
        self.loop = loop


def _resolve(future: asyncio.Future[float], score: float | None, error: BaseException | None) -> None:
    if future.done():  # the caller timed out or was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(score if score is not None else 0.0)


class BatchingRouter:
    """A :class:`routers.base.Router` over a synchronous :class:`Scorer`, scored off the event loop.

    Requests queue (bounded: :class:`ClassifierOverloadedError` at once when full); the worker takes the
    first, adds what is already queued up to ``max_batch``, scores them in one forward pass and resolves
    each future on its own loop. It waits up to ``batch_wait_ms`` for more companions only while traffic is
    concurrent (its last batch held more than one request): a lone request is never held back for company
    that is not coming. Identical texts hit an LRU cache of ``cache_size``.
    """

    def __init__(
        self,
        load: Callable[[], Scorer],
        *,
        name: str = "classifier",
        max_batch: int = 32,
        batch_wait_ms: float = 2.0,
        queue_size: int = 512,
        cache_size: int = 10_000,
    ) -> None:
        self.name = name
        self._load = load
        self._max_batch = max_batch
        self._wait_s = batch_wait_ms / 1000.0
        self._last_batch = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._cache: OrderedDict[str, float] = OrderedDict()
        self._cache_size = cache_size
        self._scorer: Scorer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    async def start(self) -> None:
        """Start the worker thread and load the model in it; raises :class:`ClassifierError` on failure."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[float] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, loaded), name=f"tiergate-{self.name}", daemon=True
        )
        self._thread.start()
        await loaded

    def ready(self) -> bool:
        return self._scorer is not None and not self._closed

    @property
    def recommended_threshold(self) -> float | None:
        """The checkpoint's recommended threshold (``metadata.json``), once started; None if it has none."""
        return self._scorer.recommended_threshold if self._scorer is not None else None

    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def score(self, text: str) -> float:
        """``P(large needed)`` for one routing text."""
        if not self.ready():
            raise ClassifierNotReadyError(f"router {self.name!r} is not started or is closed")
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        try:
            self._queue.put_nowait(_Job(text, future, loop))
        except queue.Full:
            raise ClassifierOverloadedError(f"router {self.name!r} queue is full ({self._queue.maxsize})") from None
        score = await future
        if self._cache_size:
            self._cache[text] = score
            self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return score

    async def aclose(self) -> None:
        """Stop the worker after the queued jobs; later calls to ``score`` raise."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._stop_and_join, thread)

    def _stop_and_join(self, thread: threading.Thread) -> None:
        self._queue.put(_STOP)
        thread.join(timeout=30)

    def _run(self, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future[float]) -> None:
        try:
            self._scorer = self._load()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported to start()
            error = exc if isinstance(exc, ClassifierError) else ClassifierError(f"cannot load classifier: {exc}")
            loop.call_soon_threadsafe(_resolve, loaded, None, error)
            return
        loop.call_soon_threadsafe(_resolve, loaded, 0.0, None)
        while True:
            jobs, stop = self._collect()
            if jobs:
                self._score(jobs)
            if stop:
                break
        self._fail_pending()

    def _collect(self) -> tuple[list[_Job], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        jobs = [first] if isinstance(first, _Job) else []
        deadline = time.monotonic() + (self._wait_s if self._last_batch > 1 else 0.0)
        while len(jobs) < self._max_batch:
            try:
                remaining = deadline - time.monotonic()
                item = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is _STOP:
                return jobs, True
            if isinstance(item, _Job):
                jobs.append(item)
        self._last_batch = len(jobs)
        return jobs, False

    def _score(self, jobs: list[_Job]) -> None:
        assert self._scorer is not None
        try:
            scores: list[float] | None = self._scorer.score_batch([job.text for job in jobs])
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - the requests get a clear error, the worker keeps going
            scores = None
            error = exc if isinstance(exc, ClassifierError) else ClassifierError(f"scoring failed: {exc}")
        for i, job in enumerate(jobs):
            score = scores[i] if scores is not None else None
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, score, error)
            except RuntimeError:  # that event loop is closed
                pass

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Job):
                error = ClassifierNotReadyError(f"router {self.name!r} closed")
                try:
                    item.loop.call_soon_threadsafe(_resolve, item.future, None, error)
                except RuntimeError:
                    pass
