"""The optional JSONL request log: one line per finished request, written by a background thread."""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from gateway.accounting import RequestOutcome

log = logging.getLogger("tiergate.request_log")

_STOP = object()


def log_record(outcome: RequestOutcome, include_prompts: bool = False) -> dict[str, Any]:
    """The fields of one line. No prompt text unless ``include_prompts`` (and the api kept it)."""
    decision = outcome.decision
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(outcome.wall_time, UTC).isoformat(timespec="milliseconds"),
        "request_id": outcome.request_id,
        "requested_model": outcome.requested_model,
        "stream": outcome.stream,
        "decision": None if decision is None else decision.tier,
        "reason": None if decision is None else decision.reason,
        "score": None if decision is None else decision.score,
        "threshold": None if decision is None else decision.threshold,
        "tier": outcome.tier,
        "backend": outcome.backend,
        "model": outcome.model,
        "status": outcome.status,
        "outcome": outcome.outcome,
        "error_kind": outcome.error_kind,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "cached_prompt_tokens": outcome.cached_prompt_tokens,
        "cost_usd": outcome.cost_usd,
        "usage_estimated": outcome.usage_estimated,
        "counterfactual_cost_usd": outcome.counterfactual_cost_usd,
        "routing_seconds": outcome.routing_seconds,
        "upstream_seconds": outcome.upstream_seconds,
        "ttft_seconds": outcome.ttft_seconds,
        "duration_seconds": outcome.duration_seconds,
        "retries": outcome.retries,
        "fallback": outcome.fallback,
    }
    if include_prompts and outcome.prompt_text is not None:
        record["prompt"] = outcome.prompt_text
    return record


class RequestLog:
    """An ``OutcomeSink``: ``record`` only enqueues; a thread serialises, writes and flushes.

    The request path never touches the disk. ``start`` and ``close`` are called from the app's lifespan;
    ``close`` writes every queued record before it returns.
    """

    def __init__(self, path: str | Path, include_prompts: bool = False, flush_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.include_prompts = include_prompts
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def record(self, outcome: RequestOutcome) -> None:
        self._queue.put(outcome)

    def start(self) -> None:
        if self._thread is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("ab")
        self._thread = threading.Thread(target=self._run, args=(handle,), name="tiergate-request-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is None:  # never started (no lifespan): write what was recorded synchronously
            self.start()
        assert self._thread is not None
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def _run(self, handle: IO[bytes]) -> None:
        dirty = False
        with handle:
            while True:
                try:
                    item = self._queue.get(timeout=self.flush_interval_s)
                except queue.Empty:
                    if dirty:
                        handle.flush()
                        dirty = False
                    continue
                if item is _STOP:
                    handle.flush()
                    return
                assert isinstance(item, RequestOutcome)
                try:
                    handle.write(orjson.dumps(log_record(item, self.include_prompts)) + b"\n")
                    dirty = True
                except Exception:  # a full disk must not kill the writer: the next line may go through
                    log.exception("cannot write the request log %s", self.path)
