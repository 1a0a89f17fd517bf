"""Helpers for the learning tests: two distinguishable models on the fake, client-visible answers, metrics, rows."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.tools.fake_upstream import FakeUpstream
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL
from tests.support.prom import sample

SMALL_ANSWER = "small says: the answer is 4"
LARGE_ANSWER = "large says: the answer is four, because 2 + 2 = 4"
COMPARED_HEADERS = ("x-tiergate-tier", "x-tiergate-model", "x-tiergate-score", "x-tiergate-reason",
                    "x-tiergate-cost-usd", "content-type")


def two_models(fake: FakeUpstream, small: float = 0.85, large: float = 0.9) -> None:
    fake.answers = {SMALL_MODEL: SMALL_ANSWER, LARGE_MODEL: LARGE_ANSWER}
    fake.judge_scores = {"small says": small, "large says": large}


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def chat(index: int) -> dict[str, Any]:
    word = "hard" if index % 2 else "easy"
    return {"model": "tiergate-auto", "messages": [{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": f"{word} question number {index}"}]}


def seen_by_client(client: httpx.Client, index: int, stream: bool) -> tuple[Any, ...]:
    """What a client can observe of one answer, minus the fields that differ on every call (ids, clocks)."""
    body = {**chat(index), "stream": stream}
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
            status, headers = response.status_code, response.headers
        payloads = [e if e == "data: [DONE]" else _stable(orjson.loads(e[6:])) for e in events]
        content: Any = payloads
    else:
        response = client.post("/v1/chat/completions", json=body)
        status, headers, content = response.status_code, response.headers, _stable(response.json())
    return status, tuple(headers.get(name) for name in COMPARED_HEADERS), content


def _stable(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("id", "created")}


def run_traffic(url: str, count: int = 50) -> list[tuple[Any, ...]]:
    with httpx.Client(base_url=url, timeout=10) as client:
        return [seen_by_client(client, index, stream=index >= count // 2) for index in range(count)]


def metric(url: str, name: str, **labels: str) -> float:
    """One metric of a running gateway, summed over the samples whose labels include ``labels``."""
    return sample(httpx.get(url + "/metrics").text, name, **labels)


def sqlite_rows(path: Path, where: str = "1=1") -> list[sqlite3.Row]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(f"SELECT * FROM requests WHERE {where}"))


def postgres_rows(url: str, where: str = "1=1") -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        try:
            return list(conn.execute(f"SELECT * FROM requests WHERE {where}"))  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            return []


def learning(store: str, **extra: Any) -> dict[str, Any]:
    judge = {"poll_s": 0.2, "retry_base_s": 0.2, **extra.pop("judge", {})}
    # The machine is shared: a busy moment must not make the loop skip a shadow call these tests count.
    return {"shadow_rate": 1.0, "store": store, "judge": judge, "max_loop_lag_ms": 0, **extra}
