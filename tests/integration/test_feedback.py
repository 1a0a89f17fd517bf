"""``POST /v1/feedback``: a user's score attaches to the answered request of the same key, errors in OpenAI's shape."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admission.auth import hash_key
from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.gateway import running_gateway, upstream_settings

CHAT = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hi"}]}
KEYS = [{"name": "alice", "hash": hash_key("tg-alice")}, {"name": "bob", "hash": hash_key("tg-bob")}]
ALICE = {"authorization": "Bearer tg-alice"}
BOB = {"authorization": "Bearer tg-bob"}


@pytest.fixture
def server(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[ServerThread]:
    settings = upstream_settings(fake_upstream.url, auth={"keys": KEYS},  # type: ignore[attr-defined]
                                 learning={"enabled": True, "store": str(tmp_path / "labels.sqlite3")})
    with running_gateway(settings) as gateway:
        yield gateway


def answered(server: ServerThread, headers: dict[str, str] = ALICE) -> str:
    response = httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 200
    return response.headers["x-request-id"]


def feedback(server: ServerThread, body: dict[str, Any], headers: dict[str, str] = ALICE) -> httpx.Response:
    return httpx.post(server.url + "/v1/feedback", json=body, headers=headers)


def stored(tmp_path: Path) -> list[tuple[str, str, float]]:
    with sqlite3.connect(tmp_path / "labels.sqlite3") as conn:
        return list(conn.execute("SELECT request_id, key_id, score FROM feedback ORDER BY id"))


@pytest.mark.parametrize(("score", "value"), [("up", 1.0), ("down", 0.0), (0.25, 0.25), (1, 1.0)])
def test_feedback_right_after_the_answer_attaches_to_it(server: ServerThread, tmp_path: Path, score: Any,
                                                        value: float) -> None:
    rid = answered(server)
    response = feedback(server, {"request_id": rid, "score": score})
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "feedback", "request_id": rid, "score": value}
    assert stored(tmp_path) == [(rid, "alice", value)]


def test_the_request_id_may_come_as_the_x_request_id_header(server: ServerThread, tmp_path: Path) -> None:
    rid = answered(server)
    assert feedback(server, {"thumbs": "up"}, {**ALICE, "x-request-id": rid}).status_code == 200
    assert stored(tmp_path) == [(rid, "alice", 1.0)]


@pytest.mark.parametrize("score", [1.5, -0.1, "great", None, True, "1e999"])
def test_a_bad_score_is_a_400_naming_the_param(server: ServerThread, score: Any) -> None:
    rid = answered(server)
    body = {"request_id": rid} if score is None else {"request_id": rid, "score": score}
    response = feedback(server, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "score", "invalid_score")


def test_an_unknown_id_or_another_key_s_request_is_a_404(server: ServerThread, tmp_path: Path) -> None:
    rid = answered(server)
    for body, headers in (({"request_id": "nope", "score": 1}, ALICE), ({"request_id": rid, "score": 1}, BOB)):
        response = feedback(server, body, headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "request_not_found"
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert stored(tmp_path) == []


def test_feedback_needs_a_key_like_chat(server: ServerThread) -> None:
    rid = answered(server)
    response = feedback(server, {"request_id": rid, "score": 1}, headers={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_feedback_survives_a_restart_of_the_gateway(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = upstream_settings(fake_upstream.url, learning={"enabled": True,  # type: ignore[attr-defined]
                                                              "store": str(tmp_path / "labels.sqlite3")})
    with running_gateway(settings) as first:
        rid = answered(first, {})
    with running_gateway(settings) as second:  # the id is no longer in memory: found in the store
        assert feedback(second, {"request_id": rid, "score": "down"}, {}).status_code == 200
    assert stored(tmp_path) == [(rid, "anonymous", 0.0)]


def test_feedback_is_a_404_when_learning_is_off(fake_upstream: FakeUpstream) -> None:
    with running_gateway(upstream_settings(fake_upstream.url)) as server:  # type: ignore[attr-defined]
        response = feedback(server, {"request_id": "x", "score": 1}, {})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "feedback_disabled"
