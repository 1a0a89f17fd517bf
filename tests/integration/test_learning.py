"""Learning from live traffic end to end: shadow answers, the judge and the label store on real databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.tools.fake_upstream import FakeUpstream
from tests.support.doubles import FixedRouter
from tests.support.gateway import LARGE_MODEL, SMALL_MODEL, running_gateway, upstream_settings
from tests.support.learning import (
    chat,
    learning,
    metric,
    postgres_rows,
    run_traffic,
    sqlite_rows,
    two_models,
    wait_until,
)

ROUTER = {"hard": 0.9}


@pytest.fixture
def fake(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    two_models(fake_upstream)
    yield fake_upstream


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_every_shadowed_request_becomes_a_judged_label_and_clients_see_no_difference(
        fake: FakeUpstream, tmp_path: Path, request: pytest.FixtureRequest, database: str) -> None:
    if database == "sqlite":
        store = str(tmp_path / "labels.sqlite3")
        rows: Callable[[str], list[Any]] = lambda where: sqlite_rows(Path(store), where)  # noqa: E731
    else:
        store = request.getfixturevalue("fresh_postgres")
        rows = lambda where: postgres_rows(store, where)  # noqa: E731
    with running_gateway(upstream_settings(fake.url), router=FixedRouter(0.1, ROUTER)) as plain:  # type: ignore[attr-defined]
        without = run_traffic(plain.url)
    fake.received.clear()
    settings = upstream_settings(fake.url, learning=learning(store))  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1, ROUTER)) as server:
        shadowed = run_traffic(server.url)
        wait_until(lambda: len(rows("small_score IS NOT NULL")) == 50)
        assert metric(server.url, "tiergate_shadow_requests_total", outcome="answered") == 50
        assert metric(server.url, "tiergate_judge_verdicts_total", verdict="small_as_good") == 50
        assert metric(server.url, "tiergate_labels_stored_total", kind="verdict") == 50
        assert metric(server.url, "tiergate_learning_spend_usd_total", purpose="shadow") > 0
        assert metric(server.url, "tiergate_learning_spend_usd_total", purpose="judge") > 0
    assert shadowed == without  # status, routing headers, cost and every byte of content (JSON and SSE)
    labelled = rows("small_score IS NOT NULL")
    assert {r["tier"] for r in labelled} == {"small", "large"}
    assert {r["shadow_tier"] for r in labelled if r["tier"] == "small"} == {"large"}
    assert all(r["small_score"] == pytest.approx(0.85) and r["large_score"] == pytest.approx(0.9) for r in labelled)
    assert all(r["judge_agreement"] == 1 and r["judge_mode"] == "pairwise" for r in labelled)
    assert all(r["routing_text"] is None and len(r["text_hash"]) == 64 for r in labelled)  # no consent: a hash
    assert all(r["cost_usd"] > 0 and r["shadow_cost_usd"] > 0 and r["key_id"] == "anonymous" for r in labelled)
    shadow_calls = [r.body for r in fake.received if "stream" not in r.body and "[The Start" not in str(r.body)]
    primary_streams = [r.body for r in fake.received if r.body.get("stream")]
    assert len(primary_streams) == 25 and len(shadow_calls) == 50  # the primaries send "stream"; shadows never
    assert {orjson.dumps(b["messages"]) for b in shadow_calls} == {orjson.dumps(chat(i)["messages"]) for i in range(50)}
    judge_calls = [r for r in fake.received if "[The Start of Assistant A" in str(r.body)]
    assert len(judge_calls) == 100  # both orders for each pair


def test_prompts_are_stored_only_with_consent_and_single_mode_rates_each_answer(
        fake: FakeUpstream, tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    fake.judge_scores = {"small says": 4 / 9, "large says": 1.0}
    settings = upstream_settings(fake.url, learning=learning(str(store), include_prompts=True,  # type: ignore[attr-defined]
                                                             judge={"mode": "single"}))
    with running_gateway(settings, router=FixedRouter(0.1, ROUTER)) as server:
        run_traffic(server.url, count=4)
        wait_until(lambda: len(sqlite_rows(store, "small_score IS NOT NULL")) == 4)
        assert metric(server.url, "tiergate_judge_verdicts_total", verdict="large_better") == 4
    rows = sqlite_rows(store)
    assert sorted(r["routing_text"] for r in rows) == sorted(f"{w} question number {i}" for i, w in
                                                             enumerate(["easy", "hard", "easy", "hard"]))
    assert all(r["small_score"] == pytest.approx(4 / 9) and r["large_score"] == 1.0 for r in rows)
    assert all(r["judge_mode"] == "single" and r["judge_agreement"] is None for r in rows)


@pytest.mark.parametrize("how", ["tools", "header", "explicit_model", "opted_out_key", "not_opted_in"])
def test_requests_that_must_not_be_shadowed_are_not(fake: FakeUpstream, tmp_path: Path, how: str) -> None:
    from gateway.admission.auth import hash_key

    store = tmp_path / "labels.sqlite3"
    keys = [{"name": "private", "hash": hash_key("tg-private"), "shadow": False},
            {"name": "open", "hash": hash_key("tg-open")},
            {"name": "fan", "hash": hash_key("tg-fan"), "shadow": True}]
    config = learning(str(store), shadow_keys="opted_in" if how == "not_opted_in" else "all")
    settings = upstream_settings(fake.url, learning=config, auth={"keys": keys})  # type: ignore[attr-defined]
    body: dict[str, Any] = chat(0)
    headers = {"authorization": "Bearer tg-open"}
    if how == "tools":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    elif how == "header":
        headers["x-tiergate-shadow"] = "off"
    elif how == "explicit_model":
        body["model"] = SMALL_MODEL
    elif how == "opted_out_key":
        headers["authorization"] = "Bearer tg-private"
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        for _ in range(3):
            assert httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
        ok = httpx.post(server.url + "/v1/chat/completions", json=chat(0), headers={"authorization": "Bearer tg-fan"})
        assert ok.status_code == 200
        wait_until(lambda: len(sqlite_rows(store)) == 4)
        wait_until(lambda: len(sqlite_rows(store, "shadow_status IS NOT NULL")) >= 1)
        wait_until(lambda: server.app.state.gateway.learning.idle())  # type: ignore[attr-defined]
    assert [r.body["model"] for r in fake.received if "[The Start" not in str(r.body)].count(LARGE_MODEL) == 1
    [shadowed] = sqlite_rows(store, "shadow_status IS NOT NULL")
    assert shadowed["key_id"] == "fan"


def test_shadow_rate_samples_a_share_of_requests(fake: FakeUpstream, tmp_path: Path) -> None:
    store = tmp_path / "labels.sqlite3"
    settings = upstream_settings(fake.url, learning=learning(str(store), shadow_rate=0.3, seed=7))  # type: ignore[attr-defined]
    with running_gateway(settings, router=FixedRouter(0.1)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for index in range(60):
                assert client.post("/v1/chat/completions", json=chat(2 * index)).status_code == 200
        wait_until(lambda: len(sqlite_rows(store)) == 60)
        shadowed = metric(server.url, "tiergate_shadow_requests_total", outcome="answered")
    assert 8 <= shadowed <= 30
