"""``tiergate serve --workers 2``: one port, metrics one scrape sees as one target, graceful drain on SIGTERM."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.gateway_process import GatewayProcess, process_config
from tests.support.prom import sample

CHAT = "/v1/chat/completions"
BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}


def post(url: str) -> int:
    # A new connection per request, so the kernel hands requests to either worker.
    return httpx.post(url + CHAT, json=BODY, timeout=10).status_code


def test_two_workers_serve_one_port_and_a_scrape_sums_both(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    config = process_config(fake_upstream.url)  # type: ignore[attr-defined]
    gateway = GatewayProcess(tmp_path, config, workers=2, env={"TIERGATE_WORKER_METRICS_DIR": str(metrics_dir)})
    gateway.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: post(gateway.url), range(60)))
        assert statuses == [200] * 60
        time.sleep(1.5)  # every worker writes its snapshot each second
        scrapes = [httpx.get(gateway.url + "/metrics", timeout=5).text for _ in range(4)]
        files = sorted(metrics_dir.glob("worker-*.json"))
    finally:
        gateway.stop()
    assert len(files) == 2  # two worker processes
    per_worker = []
    for path in files:
        snap = orjson.loads(path.read_bytes())
        per_worker.append(sum(s[2] for f in snap if f["name"] == "tiergate_requests"
                              for s in f["samples"] if s[0] == "tiergate_requests_total"))
    assert sum(per_worker) == 60, per_worker
    assert min(per_worker) > 0, per_worker  # both workers took requests, so the scrapes below merged two
    for text in scrapes:  # whichever worker answers, the scrape holds both workers' totals
        assert sample(text, "tiergate_requests_total", outcome="success") == 60
        assert sample(text, "tiergate_request_duration_seconds_count") == 60
        assert text.count("# TYPE tiergate_requests_total counter") == 1


def test_sigterm_drains_in_flight_requests_of_every_worker(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, process_config(fake_upstream.url), workers=2)  # type: ignore[attr-defined]
    gateway.start()
    fake_upstream.push(*[Reply(delay=1.5) for _ in range(4)])
    results: list[int] = []

    def slow() -> None:
        results.append(post(gateway.url))

    threads = [threading.Thread(target=slow) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(fake_upstream.received) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fake_upstream.received) == 4  # all four are in flight, somewhere
        gateway.terminate()
        code = gateway.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=10)
    finally:
        gateway.stop()
    assert results == [200] * 4
    assert code == 0


def test_workers_keep_the_connection_limits(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    server = {"host": "127.0.0.1", "load_before_serving": True, "shutdown_grace_s": 10, "max_header_bytes": 4096}
    gateway = GatewayProcess(tmp_path, process_config(fake_upstream.url, server=server), workers=2)  # type: ignore[attr-defined]
    gateway.start()
    try:
        statuses = set()
        for _ in range(6):  # new connections, so both workers are asked
            response = httpx.post(gateway.url + CHAT, json=BODY, headers={"x-padding": "a" * 8192}, timeout=10)
            statuses.add(response.status_code)
        assert statuses == {431}
        assert post(gateway.url) == 200
    finally:
        gateway.stop()
