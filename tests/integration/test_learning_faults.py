"""Learning faults: judge down or talking nonsense, the shadow tier hanging, spend caps, a full or read-only
store, a full shadow queue. In each, clients get exactly what they get with learning off; counters tell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.learning.loop import LearningLoop
from gateway.learning.records import RequestRow
from gateway.learning.sqlite import SQLiteStore
from gateway.learning.store import StoreError
from gateway.tools.fake_upstream import FakeUpstream, Reply
from tests.support.doubles import FixedRouter
from tests.support.fault_doubles import closed_port_url
from tests.support.gateway import LARGE_MODEL, running_gateway, upstream_settings
from tests.support.learning import learning, run_traffic, sqlite_rows, two_models, wait_until

COUNT = 8
JUDGE_MODEL = "judge-model"


@pytest.fixture
def fake(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    two_models(fake_upstream)
    yield fake_upstream


@pytest.fixture
def baseline(fake: FakeUpstream) -> list[tuple[Any, ...]]:
    """What clients see with learning off (every request goes to the small tier)."""
    with running_gateway(upstream_settings(fake.url), router=FixedRouter(0.1)) as server:  # type: ignore[attr-defined]
        seen = run_traffic(server.url, COUNT)
    fake.received.clear()
    return seen


def judge_on(url: str) -> dict[str, Any]:
    return {"backend": {"kind": "openai", "model": JUDGE_MODEL, "base_url": url + "/v1",
                        "timeout": {"connect": 1, "read": 2, "write": 2, "pool": 2}}}


def loop_of(server: Any) -> LearningLoop:
    loop = server.app.state.gateway.learning
    assert isinstance(loop, LearningLoop)
    return loop


def counters(server: Any) -> dict[str, dict[str, float]]:
    return loop_of(server).metrics.snapshot()


def test_judge_down_keeps_every_pair_until_a_judge_answers(fake: FakeUpstream, baseline: list[Any],
                                                           tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    down = learning(str(store), judge=judge_on(closed_port_url()))
    with running_gateway(upstream_settings(fake.url, learning=down), router=FixedRouter(0.1)) as server:  # type: ignore[attr-defined]
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: counters(server)["shadow"]["answered"] == COUNT)
        wait_until(lambda: counters(server)["judge_failures"]["error"] >= COUNT)
    assert sqlite_rows(store, "small_score IS NOT NULL") == []
    up = learning(str(store), judge=judge_on(fake.url))  # type: ignore[attr-defined]
    with running_gateway(upstream_settings(fake.url, learning=up), router=FixedRouter(0.1)) as server:  # type: ignore[attr-defined]
        wait_until(lambda: len(sqlite_rows(store, "small_score IS NOT NULL")) == COUNT)  # after a restart, too
        assert counters(server)["verdicts"]["small_as_good"] == COUNT


def test_a_judge_talking_nonsense_is_counted_and_asked_again(fake: FakeUpstream, baseline: list[Any],
                                                             tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    nonsense = [Reply(content="Both are fine."), Reply(content='{"score_a": 7, "score_b": 0.5}'),
                Reply(content="{not json"), Reply(body={"choices": []})]
    fake.push_for(JUDGE_MODEL, *nonsense)
    settings = upstream_settings(fake.url, learning=learning(str(store), judge=judge_on(fake.url)))  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: len(sqlite_rows(store, "small_score IS NOT NULL")) == COUNT)
        failures = counters(server)["judge_failures"]
    assert failures["garbage"] == len(nonsense)
    assert all(0 <= row["small_score"] <= 1 for row in sqlite_rows(store))


def test_a_hanging_shadow_tier_times_out_in_the_background(fake: FakeUpstream, baseline: list[Any],
                                                           tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    fake.push_for(LARGE_MODEL, *[Reply(delay=1.5) for _ in range(COUNT)])
    settings = upstream_settings(fake.url, learning=learning(str(store), shadow_timeout_s=0.3,  # type: ignore[attr-defined]
                                                             shadow_max_concurrency=COUNT))
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: counters(server)["shadow"]["timeout"] == COUNT)
        wait_until(lambda: len(sqlite_rows(store, "shadow_status = 'failed'")) == COUNT)
    assert {row["shadow_error"] for row in sqlite_rows(store)} == {"timeout"}


def test_spend_caps_stop_shadow_calls_and_the_judge(fake: FakeUpstream, baseline: list[Any], tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    no_shadow = learning(str(store), shadow_daily_budget_usd=0.0)
    with running_gateway(upstream_settings(fake.url, learning=no_shadow), router=FixedRouter(0.1)) as server:  # type: ignore[attr-defined]
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: counters(server)["shadow"]["over_budget"] == COUNT)
        assert counters(server)["shadow"]["answered"] == 0
    assert not [r for r in fake.received if r.body["model"] == LARGE_MODEL]
    fake.received.clear()
    no_judge = learning(str(tmp_path / "second.sqlite3"), judge={"daily_budget_usd": 0.0})
    with running_gateway(upstream_settings(fake.url, learning=no_judge), router=FixedRouter(0.1)) as server:  # type: ignore[attr-defined]
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: counters(server)["judge_failures"]["over_budget"] == COUNT)
        assert loop_of(server).store.stats(0.1).pending == COUNT  # kept for tomorrow's budget
        assert counters(server)["spend"]["judge"] == 0


@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_a_full_or_read_only_store_is_counted_and_clients_see_nothing(fake: FakeUpstream, baseline: list[Any],
                                                                       tmp_path: Path, fault: str) -> None:
    settings = upstream_settings(fake.url, learning=learning(str(tmp_path / "labels.sqlite3")))  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        store = loop_of(server).store
        assert isinstance(store, SQLiteStore)
        if fault == "full":  # no page may be added: SQLite answers SQLITE_FULL, as on a full disk
            store.pragma(f"PRAGMA max_page_count = {store.pragma('PRAGMA page_count')[0][0]}")
            fill_up(store)
        else:
            store.pragma("PRAGMA query_only = ON")
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: counters(server)["shadow"]["answered"] == COUNT)  # the shadow calls still ran
        wait_until(lambda: loop_of(server).idle())
        assert counters(server)["store_errors"]["write_failed"] >= COUNT  # their rows did not get in
        response = httpx.post(server.url + "/v1/feedback", json={"request_id": "any", "score": 1})
        assert response.status_code in (404, 503)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def fill_up(store: SQLiteStore) -> None:
    """Write rows, smaller and smaller, until the database has no room even for a tiny one."""
    index = 0
    for size in (2000, 500, 100, 1):
        for _ in range(1000):
            index += 1
            try:
                store.record_request(RequestRow(f"filler-{index}", 0.0, "k", "h", "x" * size, None, None, None, None,
                                                "small", "m", 0, 0, 0.0))
            except StoreError as exc:
                assert "full" in str(exc)
                break
        else:
            raise AssertionError("the database never filled up")


def test_a_full_shadow_queue_drops_and_counts(fake: FakeUpstream, baseline: list[Any], tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    fake.push_for(LARGE_MODEL, *[Reply(delay=0.5) for _ in range(COUNT)])
    settings = upstream_settings(fake.url, learning=learning(str(store), shadow_max_concurrency=1,  # type: ignore[attr-defined]
                                                             shadow_queue_size=1))
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: loop_of(server).idle())
        shadow = counters(server)["shadow"]
    assert shadow["dropped"] >= COUNT - 3
    assert shadow["answered"] + shadow["dropped"] == COUNT


def test_a_judgement_cut_off_by_shutdown_is_taken_up_at_once_after_restart(fake: FakeUpstream,
                                                                           tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    fake.push_for(JUDGE_MODEL, *[Reply(delay=1.5, content='{"score_a": 1, "score_b": 1}') for _ in range(2)])
    settings = upstream_settings(fake.url, learning=learning(str(store), judge=judge_on(fake.url)))  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        run_traffic(server.url, 2)
        wait_until(lambda: loop_of(server).judging > 0)
    assert sqlite_rows(store, "small_score IS NOT NULL") == []  # the lease (minutes) was handed back
    with running_gateway(settings, router=FixedRouter(0.1)):
        wait_until(lambda: len(sqlite_rows(store, "small_score IS NOT NULL")) == 2, timeout=20)


def test_no_shadow_call_starts_while_the_event_loop_runs_late(fake: FakeUpstream, baseline: list[Any],
                                                              tmp_path: Path) -> None:
    import time

    store = tmp_path / "labels.sqlite3"
    # A threshold of a microsecond: every tick is "late", as on a gateway saturated by clients.
    settings = upstream_settings(fake.url, learning=learning(str(store), max_loop_lag_ms=0.001))  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        time.sleep(0.3)  # a few ticks measured
        assert run_traffic(server.url, COUNT) == baseline
        wait_until(lambda: counters(server)["shadow"]["busy"] == COUNT)
        wait_until(lambda: len(sqlite_rows(store)) == COUNT)  # every request is still recorded
        assert counters(server)["shadow"]["answered"] == 0
    assert not [r for r in fake.received if r.body["model"] == LARGE_MODEL]
