"""The label store on real databases: SQLite files and a PostgreSQL server, through the one interface."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.learning.migrations import LATEST, MIGRATIONS
from gateway.learning.open_store import open_store
from gateway.learning.postgres import PostgresStore
from gateway.learning.records import Feedback, PendingJudgement, RequestRow, ShadowRow, Verdict
from gateway.learning.sqlite import SQLiteStore
from gateway.learning.store import LabelStore, StoreError


def request(rid: str, tier: str = "small", text: str | None = "what is 2+2?", at: float | None = None) -> RequestRow:
    return RequestRow(rid, at if at is not None else time.time(), "team-a", "h" * 64, text, tier,
                      "score_below_threshold", 0.2, 0.5, tier, "gpt-4o-mini" if tier == "small" else "gpt-4o",
                      10, 5, 0.001)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabelStore]:
    url = str(tmp_path / "labels.sqlite3") if request.param == "sqlite" else request.getfixturevalue("fresh_postgres")
    chosen = open_store(url)
    chosen.open()
    yield chosen
    chosen.close()


def test_open_store_picks_the_database_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("postgresql://u:secret@127.0.0.1:1/db"), PostgresStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db"), SQLiteStore)
    assert open_store(f"sqlite:///{tmp_path}/a.db").url == f"sqlite:///{tmp_path}/a.db"
    assert isinstance(open_store(str(tmp_path / "b.db")), SQLiteStore)


def test_schema_is_migrated_once_and_reopening_keeps_the_rows(store: LabelStore) -> None:
    assert store.schema_version() == LATEST
    store.record_request(request("r1"))
    store.close()
    store.open()  # migrations already applied: nothing runs twice, nothing is lost
    assert store.schema_version() == LATEST
    assert store.owner("r1") == "team-a"


def test_a_request_its_shadow_and_verdict_become_one_labelled_row(store: LabelStore) -> None:
    store.record_request(request("r1", tier="small"))
    store.record_request(request("r1", tier="large"))  # a duplicate id is ignored, not an error
    store.record_shadow(ShadowRow("r1", "large", "gpt-4o", "answered", 10, 7, 0.002),
                        PendingJudgement("r1", "what is 2+2?", "4", "Four."))
    claimed = store.claim_judgements(time.time(), 10, lease_s=60)
    assert [(p.request_id, p.small_answer, p.large_answer, p.attempts) for p in claimed] == [("r1", "4", "Four.", 1)]
    assert store.claim_judgements(time.time(), 10, lease_s=60) == []  # leased: nobody else takes it
    store.record_verdict(Verdict("r1", 0.9, 1.0, "pairwise", "gpt-4o", True, 0.0005))
    [row] = store.labelled()
    assert (row.request_id, row.routing_text, row.small_score, row.large_score, row.tier) == (
        "r1", "what is 2+2?", 0.9, 1.0, "small")
    stats = store.stats(tie_margin=0.1)
    assert (stats.requests, stats.shadowed, stats.judged, stats.pending, stats.small_as_good) == (1, 1, 1, 0, 1)
    assert stats.agreement == 1.0 and stats.routed_quality == pytest.approx(0.9)
    assert store.spent_since(0.0) == pytest.approx((0.002, 0.0005))


def test_postponed_judgement_comes_back_when_due(store: LabelStore) -> None:
    store.record_request(request("r2"))
    store.record_shadow(ShadowRow("r2", "large", "gpt-4o", "answered"), PendingJudgement("r2", "q", "a", "b"))
    now = time.time()
    [claimed] = store.claim_judgements(now, 10, lease_s=60)
    store.postpone_judgement("r2", now + 30, "judge down")
    assert store.claim_judgements(now + 29, 10, 60) == []
    [again] = store.claim_judgements(now + 31, 10, 60)
    assert again.attempts == 2
    assert store.stats(0.0).pending == 1


def test_feedback_attaches_to_the_request(store: LabelStore) -> None:
    store.record_request(request("r3"))
    store.add_feedback(Feedback("r3", time.time(), "team-a", 1.0))
    store.add_feedback(Feedback("r3", time.time(), "team-a", 0.0))
    stats = store.stats(0.0)
    assert (stats.feedback, stats.feedback_mean) == (2, 0.5)
    assert store.owner("missing") is None


def test_labelled_since_filters_by_time(store: LabelStore) -> None:
    for rid, at in (("old", 1000.0), ("new", time.time())):
        store.record_request(request(rid, at=at))
        store.record_shadow(ShadowRow(rid, "large", "gpt-4o", "answered"), PendingJudgement(rid, "q", "a", "b"))
        store.record_verdict(Verdict(rid, 0.5, 0.7, "single", "gpt-4o", None))
    assert [r.request_id for r in store.labelled(since=2000.0)] == ["new"]
    assert len(store.labelled()) == 2


def test_sqlite_store_uses_wal_and_reports_a_full_database(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "labels.sqlite3")
    store.open()
    assert store.pragma("PRAGMA journal_mode") == [("wal",)]
    pages = store.pragma("PRAGMA page_count")[0][0]
    store.pragma(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError, match="full"):
        for index in range(200):
            store.record_request(request(f"r{index}", text="x" * 4000))
    store.pragma("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="readonly|read-only|query_only"):
        store.record_request(request("late"))
    store.close()


def test_committed_rows_survive_a_process_killed_without_closing(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "labels.sqlite3"
    script = (
        "import os, time\n"
        "from gateway.learning.sqlite import SQLiteStore\n"
        "from gateway.learning.records import RequestRow\n"
        f"s = SQLiteStore({str(path)!r}); s.open()\n"
        "for i in range(20):\n"
        "    s.record_request(RequestRow(f'r{i}', time.time(), 'k', 'h', None, 'small', 'x', None, None,"
        " 'small', 'm', 1, 1, 0.0))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], timeout=60,
                            check=False)
    assert result.returncode == -9
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone() == (20,)


def test_replicas_opening_a_new_postgresql_store_together_migrate_it_once(fresh_postgres: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stores = [PostgresStore(fresh_postgres) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda store: store.open(), stores))
    assert {store.schema_version() for store in stores} == {LATEST}
    rows = stores[0].run([("SELECT COUNT(*) FROM schema_version", ())], fetch=True)
    assert rows[0][0] == len(MIGRATIONS)
    for store in stores:
        store.close()


def test_postgres_errors_do_not_show_the_password() -> None:
    store = PostgresStore("postgresql://tiergate:hunter2@127.0.0.1:1/nowhere", connect_timeout=1)
    with pytest.raises(StoreError) as caught:
        store.open()
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)
