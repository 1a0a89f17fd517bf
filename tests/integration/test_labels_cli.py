"""``tiergate labels stats`` and ``tiergate labels export`` on a real SQLite store; the export feeds ``tiergate train``."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from gateway.learning.cli import parse_since
from gateway.learning.records import Feedback, PendingJudgement, RequestRow, ShadowRow, Verdict
from gateway.learning.sqlite import SQLiteStore
from routers.training.data import load_data

DAY = 86_400.0


def fill(path: Path, now: float) -> None:
    """Five judged requests (one without a stored prompt, one old), one shadowed but unjudged, one feedback."""
    store = SQLiteStore(path)
    store.open()
    rows = [("a", "small", "what is 2+2", 0.9, 0.9, now), ("b", "large", "prove fermat", 0.2, 0.8, now),
            ("c", "small", "hello there", 1.0, 0.7, now), ("d", "small", None, 0.5, 0.9, now),
            ("old", "large", "old prompt", 0.1, 0.9, now - 30 * DAY)]
    for rid, tier, text, small, large, at in rows:
        store.record_request(RequestRow(rid, at, "k", "h" * 64, text, tier, "score_below_threshold", 0.3, 0.5, tier,
                                        "m", 5, 5, 0.001))
        store.record_shadow(ShadowRow(rid, "large" if tier == "small" else "small", "m2", "answered", 5, 5, 0.002),
                            PendingJudgement(rid, text or "", "s", "l"))
        store.record_verdict(Verdict(rid, small, large, "pairwise", "judge", rid != "c", 0.0005))
    store.record_request(RequestRow("e", now, "k", "h" * 64, "waiting", "small", "x", None, None, "small", "m", 1, 1, 0))
    store.record_shadow(ShadowRow("e", "large", "m2", "answered"), PendingJudgement("e", "waiting", "s", "l"))
    store.add_feedback(Feedback("a", now, "k", 1.0))
    store.close()


def test_stats_report_counts_agreement_and_the_small_as_good_rate(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "labels.sqlite3"
    fill(path, time.time())
    assert main(["labels", "stats", "--store", str(path), "--json"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert (stats["requests"], stats["shadowed"], stats["judged"], stats["pending"], stats["feedback"]) == (6, 6, 5, 1, 1)
    assert stats["small_as_good"] == 2  # a (tie) and c (small better); b, d, old: large better by > 0.1
    assert stats["agreement"] == pytest.approx(4 / 5)
    # routing picked small for a, c, d and large for b, old: (0.9 + 0.8 + 1.0 + 0.5 + 0.9) / 5 vs all-large
    assert stats["routed_quality"] == pytest.approx(4.1 / 5)
    assert stats["all_large_quality"] == pytest.approx(4.2 / 5)
    assert main(["labels", "stats", "--store", str(path)]) == 0
    text = capsys.readouterr().out
    assert "the small tier was as good on 40.0% of judged shadowed requests (2 of 5)" in text
    assert "1 waiting for the judge" in text


def test_export_writes_the_jsonl_train_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "labels.sqlite3", tmp_path / "out" / "live.jsonl"
    fill(path, time.time())
    assert main(["labels", "export", "--store", str(path), "--out", str(out), "--since", "7d"]) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(x["prompt"], x["small_score"], x["large_score"]) for x in lines] == [
        ("what is 2+2", 0.9, 0.9), ("prove fermat", 0.2, 0.8), ("hello there", 1.0, 0.7)]
    assert "no stored prompt" in capsys.readouterr().err  # "d" was recorded without consent
    examples = load_data(out)
    assert [e.text for e in examples] == ["what is 2+2", "prove fermat", "hello there"]
    assert examples[1].large > examples[1].small
    assert main(["labels", "export", "--store", str(path), "--out", str(out)]) == 0
    assert len(out.read_bytes().splitlines()) == 4  # without --since the old row is there too


def test_export_refuses_too_few_judged_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "labels.sqlite3", tmp_path / "live.jsonl"
    fill(path, time.time())
    assert main(["labels", "export", "--store", str(path), "--out", str(out), "--min-judged", "10"]) == 1
    assert not out.exists()
    assert "only 4 judged rows" in capsys.readouterr().err


def test_a_missing_store_is_an_error_not_a_new_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", "stats", "--store", str(tmp_path / "nothing.sqlite3")]) == 2
    assert "no label store" in capsys.readouterr().err
    assert not (tmp_path / "nothing.sqlite3").exists()


def test_since_accepts_relative_and_iso_times() -> None:
    assert parse_since("2d", now=10 * DAY) == 8 * DAY
    assert parse_since("12h", now=DAY) == DAY / 2
    assert parse_since("1970-01-02") == DAY
    assert parse_since("1970-01-01T01:00:00+01:00") == 0.0


def test_stats_work_against_postgresql(fresh_postgres: str, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.learning.postgres import PostgresStore

    store = PostgresStore(fresh_postgres)
    store.open()
    store.record_request(RequestRow("p", time.time(), "k", "h", "q", "small", "x", None, None, "small", "m", 1, 1, 0))
    store.record_shadow(ShadowRow("p", "large", "m2", "answered"), PendingJudgement("p", "q", "s", "l"))
    store.record_verdict(Verdict("p", 0.8, 0.85, "pairwise", "judge", True))
    store.close()
    assert main(["labels", "stats", "--store", fresh_postgres, "--json"]) == 0
    stats = orjson.loads(capsys.readouterr().out)
    assert (stats["judged"], stats["small_as_good"], stats["agreement"]) == (1, 1, 1.0)
