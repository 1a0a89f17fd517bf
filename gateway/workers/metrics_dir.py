"""Prometheus metrics summed across worker processes through snapshot files in one directory.

Each worker writes its registry's samples to ``<dir>/worker-<pid>.json`` every ``interval_s`` (and when it
stops); whichever worker answers ``GET /metrics`` merges its live samples with the other workers' files.
Counters and histograms are summed over every file, including those of workers that have exited (so totals
never go backwards when a worker is replaced); load gauges are summed over live workers only; the other
gauges (threshold, shares, build info) are the answering worker's own.

The same job as prometheus_client's multiprocess mode, which does not fit here: it is chosen process-wide
when prometheus_client is imported (``PROMETHEUS_MULTIPROC_DIR``), every registry of a process then writes
one shared set of mmap files (two apps in one process, as in the tests, would count into each other), the
scrape-time gauges (queue depths, threshold, shares) would have to be pushed on every change instead of
read when scraped, and each increment would pay an mmap write on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tiergate.workers")

# Gauges that measure load in one process: a scrape reports their sum over the live workers.
SUMMED_GAUGES = frozenset({"tiergate_in_flight_requests", "tiergate_backend_queue_depth",
                           "tiergate_backend_in_flight_requests", "tiergate_classifier_queue_depth"})
Snapshot = list[dict[str, Any]]


def snapshot(registry: CollectorRegistry) -> Snapshot:
    return [{"name": m.name, "type": m.type, "help": m.documentation,
             "samples": [[s.name, s.labels, s.value] for s in m.samples]} for m in registry.collect()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge(own: Snapshot, others: Iterable[tuple[Snapshot, bool]]) -> list[Metric]:
    """``own`` plus the other workers' snapshots (each with whether that worker still runs)."""
    order: list[str] = []
    heads: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

    def add(snap: Snapshot, mine: bool, live: bool) -> None:
        for family in snap:
            name, kind = family["name"], family["type"]
            if name not in heads:
                heads[name] = (kind, family["help"])
                order.append(name)
                values[name] = {}
            if kind == "gauge" and not (mine or (live and name in SUMMED_GAUGES)):
                continue
            bucket = values[name]
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                bucket[key] = bucket.get(key, 0.0) + float(value)

    add(own, True, True)
    for snap, live in others:
        add(snap, False, live)
    out: list[Metric] = []
    for name in order:
        kind, documentation = heads[name]
        metric = Metric(name, documentation, kind)
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        out.append(metric)
    return out


class _Merged:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)

    def describe(self) -> Iterable[Metric]:
        return []


class WorkerMetrics:
    """One worker's side: write its snapshot, answer a scrape with every worker's merged samples."""

    def __init__(self, registry: CollectorRegistry, directory: str | Path, interval_s: float = 1.0) -> None:
        self.registry = registry
        self.directory = Path(directory)
        self.interval_s = interval_s
        self.pid = os.getpid()
        self.path = self.directory / f"worker-{self.pid}.json"
        self._task: asyncio.Task[None] | None = None

    def write(self) -> None:
        data = orjson.dumps(snapshot(self.registry))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def others(self) -> Iterator[tuple[Snapshot, bool]]:
        for path in sorted(self.directory.glob("worker-*.json")):
            if path == self.path:
                continue
            try:
                pid = int(path.stem.split("-", 1)[1])
                snap: Snapshot = orjson.loads(path.read_bytes())
            except (OSError, ValueError, orjson.JSONDecodeError):
                continue  # a file being replaced right now: the next scrape reads it
            yield snap, alive(pid)

    def exposition(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(merge(snapshot(self.registry), self.others())))
        return generate_latest(registry)

    def start(self) -> None:
        self.write()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.write()
            except OSError:
                log.exception("could not write the worker metrics snapshot %s", self.path)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            self.write()  # the final counts of this worker stay in the totals


class WorkerMetricsMiddleware:
    """Answers ``GET /metrics`` with the merged samples; starts and stops the snapshot writer with the app."""

    def __init__(self, app: ASGIApp, metrics: WorkerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics" and scope["method"] == "GET":
            body = self.metrics.exposition()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode()),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.metrics.start()
            elif message["type"] == "lifespan.shutdown.complete":
                await self.metrics.stop()
            await send(message)

        await self.app(scope, receive, lifespan_send)
