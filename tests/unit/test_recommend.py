"""``tiergate recommend`` on synthetic labels whose best operating point is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routers.cli import main
from routers.training.data import Example
from routers.training.recommend import operating_points, recommend

HARD, EASY = 30, 70  # the small model fails 30 of 100 prompts; the large model answers all of them


def _rows() -> tuple[list[Example], list[float]]:
    examples = [Example(f"hard {i}", 0.0, 1.0, "user", f"h{i}") for i in range(HARD)]
    examples += [Example(f"easy {i}", 1.0, 1.0, "user", f"e{i}") for i in range(EASY)]
    scores = [0.9 - i * 0.001 for i in range(HARD)] + [0.5 - i * 0.001 for i in range(EASY)]  # a perfect router
    return examples, scores


def test_cheapest_point_meeting_min_quality_is_the_known_one() -> None:
    examples, scores = _rows()
    points = operating_points(scores, examples, [1.0] * 100, [10.0] * 100, monthly_requests=1000)
    rec = recommend(points, min_quality=0.95, monthly_requests=1000)
    # Quality is (70 + k) / 100 for the k hardest prompts sent large: 95% needs k = 25.
    assert rec.verdict == "hybrid" and rec.chosen.large_share == pytest.approx(0.25)
    assert rec.chosen.quality_vs_large == pytest.approx(0.95)
    assert rec.chosen.cost_per_1k == pytest.approx(1000 * (1.0 + 0.25 * 9.0))
    assert rec.chosen.monthly_savings == pytest.approx(1000 * 10.0 - 1000 * 3.25)
    above, below = scores[24], scores[25]
    assert below < rec.chosen.threshold < above
    assert "threshold" in rec.reason and "25.0% large" in rec.reason


def test_verdict_is_all_small_when_small_is_good_enough_and_all_large_when_routing_cannot_help() -> None:
    examples, scores = _rows()
    points = operating_points(scores, examples, [1.0] * 100, [10.0] * 100, monthly_requests=1000)
    assert recommend(points, min_quality=0.7, monthly_requests=1000).verdict == "all-small"
    backwards = [-s for s in scores]  # the hard prompts come last: 99% quality needs everything large
    points = operating_points(backwards, examples, [1.0] * 100, [10.0] * 100, monthly_requests=1000)
    rec = recommend(points, min_quality=0.99, monthly_requests=1000)
    assert rec.verdict == "all-large" and rec.chosen.large_share == 1.0


def test_recommend_command_prints_the_table_verdict_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples, scores = _rows()
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps({"prompt": e.text, "small_score": e.small, "large_score": e.large,
                                        "prompt_tokens": 100, "completion_tokens": 100}) + "\n" for e in examples))
    scored = tmp_path / "scores.jsonl"
    scored.write_text("".join(json.dumps({"index": i, "score": s}) + "\n" for i, s in enumerate(scores)))
    prices = tmp_path / "prices.yaml"
    prices.write_text("small: {prompt: 1.0, completion: 1.0}\nlarge: {prompt: 10.0, completion: 10.0}\n")
    plot, out = tmp_path / "rec.png", tmp_path / "rec.json"
    args = ["recommend", "--data", str(data), "--prices", str(prices), "--small-model", "small", "--large-model",
            "large", "--scores", str(scored), "--monthly-requests", "1000000", "--plot", str(plot), "--json", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "verdict: hybrid" in printed and "<- cheapest meeting min-quality" in printed
    result = json.loads(out.read_text())
    assert result["chosen"]["large_share"] == pytest.approx(0.25)
    # 200 tokens a request: $0.0002 small, $0.002 large; 25% large -> $0.00065 a request.
    assert result["chosen"]["monthly_cost"] == pytest.approx(650.0)
    assert plot.stat().st_size > 0
    assert main([*args[:-4], "--small-model", "nope"]) == 2
    assert "no price for nope" in capsys.readouterr().err
