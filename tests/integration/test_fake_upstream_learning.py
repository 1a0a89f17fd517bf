"""The fake upstream's learning roles: two distinguishable models, per-model scripts, and a judge."""

from __future__ import annotations

import httpx

from gateway.tools.fake_upstream import FakeUpstream, Reply


def ask(fake: FakeUpstream, model: str, content: str) -> str:
    response = httpx.post(fake.url + "/v1/chat/completions",  # type: ignore[attr-defined]
                          json={"model": model, "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def test_each_model_answers_in_its_own_words(fake_upstream: FakeUpstream) -> None:
    fake_upstream.answers = {"small": "tiny answer", "large": "big answer"}
    assert ask(fake_upstream, "small", "hi") == "tiny answer"
    assert ask(fake_upstream, "large", "hi") == "big answer"
    assert ask(fake_upstream, "other", "hi") == "Hello from the fake upstream."


def test_per_model_scripts_come_before_the_shared_one(fake_upstream: FakeUpstream) -> None:
    fake_upstream.push(Reply(content="shared"))
    fake_upstream.push_for("judge", Reply(content="for the judge"))
    assert ask(fake_upstream, "judge", "x") == "for the judge"
    assert ask(fake_upstream, "judge", "x") == "shared"


def test_it_judges_pairs_and_single_answers_by_their_content(fake_upstream: FakeUpstream) -> None:
    fake_upstream.judge_scores = {"tiny": 0.25, "big": 1.0}
    pair = ("[User Request]\nq\n\n[The Start of Assistant A's Answer]\ntiny answer\n[The End of Assistant A's Answer]\n\n"
            "[The Start of Assistant B's Answer]\nbig answer\n[The End of Assistant B's Answer]\n")
    assert ask(fake_upstream, "any", pair).endswith('{"score_a": 0.25, "score_b": 1.0}')
    single = "[The Start of Assistant's Answer]\nbig answer\n[The End of Assistant's Answer]"
    assert ask(fake_upstream, "any", single).endswith("Rating: [[10]]")
    unknown = "[The Start of Assistant's Answer]\nsomething\n[The End of Assistant's Answer]"
    assert ask(fake_upstream, "any", unknown).endswith("Rating: [[6]]")  # judge_default 0.5 -> 5.5 -> 6
