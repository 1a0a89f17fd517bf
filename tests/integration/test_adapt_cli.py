"""``tiergate adapt / evaluate --against / score`` on a tiny pooled checkpoint and synthetic labels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from routers.checkpoint import save_pooled_checkpoint, truncated_encoder
from routers.classifier import EncoderScorer
from routers.cli import main
from routers.pooled import HeadSpec, MLPHead, PooledClassifier
from routers.training.adapt import AdaptError, Candidate, adapt_checkpoint
from routers.training.data import load_user_jsonl
from tests.support.tiny_encoder import WORDS, build_tiny_encoder

FILLER = [w for w in WORDS if w not in ("prove", "theorem", "integral", "hello", "hi", "thanks")]


def _start_checkpoint(tmp_path: Path) -> Path:
    """A pooled checkpoint whose head is random: it knows nothing about which prompts are hard."""
    tiny = build_tiny_encoder(tmp_path / "tiny")
    torch.manual_seed(3)
    model = PooledClassifier(truncated_encoder(tiny, 1), MLPHead(32, HeadSpec(hidden=8, members=2))).train(False)
    out = tmp_path / "start"
    meta = {"base": str(tiny), "max_length": 32, "threshold": 0.5, "data": {}, "metrics": {}}
    save_pooled_checkpoint(model, out, meta)
    return out


def _labels(path: Path, n: int, seed: int) -> Path:
    """Prompts with "prove theorem integral" need the large model; chit-chat does not."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        hard = i % 2 == 0
        words = rng.choices(FILLER, k=rng.randint(2, 6)) + (["prove", "theorem", "integral"] if hard else ["hi"])
        rng.shuffle(words)
        lines.append({"prompt": " ".join(words) + f" {i}", "small_score": 2 if hard else 9, "large_score": 9})
    return _write(path, lines)


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_adapt_learns_the_labels_and_every_command_loads_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = _start_checkpoint(tmp_path)
    data, test = _labels(tmp_path / "mine.jsonl", 160, 1), _labels(tmp_path / "test.jsonl", 80, 2)
    out = tmp_path / "adapted"
    assert main(["adapt", "--data", str(data), "--from", str(start), "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    adaptation = meta["adaptation"]
    assert adaptation["labels"] == 160 and adaptation["method"] != "prior"
    assert adaptation["data"][0]["sha256"] and adaptation["held_out"]["n"] > 0
    assert adaptation["held_out"]["adapted"]["apgr"] >= adaptation["held_out"]["start"]["apgr"]
    assert (out / "adapter.safetensors").exists() and meta["adapter"]["method"] == adaptation["method"]

    rows = load_user_jsonl(test)
    hard = [e.text for e in rows if e.small < e.large]
    easy = [e.text for e in rows if e.small >= e.large]
    scores = EncoderScorer.load(str(out)).score_batch(hard + easy)
    assert min(scores[: len(hard)]) > max(scores[len(hard) :])

    capsys.readouterr()
    plot = tmp_path / "cmp.png"
    assert main(["evaluate", "--model", str(out), "--against", str(start), "--data", str(test),
                 "--plot", str(plot), "--json", str(tmp_path / "cmp.json"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "adapted" in printed and "start" in printed and "length" in printed and "random" in printed
    result = json.loads((tmp_path / "cmp.json").read_text())["all"]
    assert result["adapted"]["apgr"] > result["start"]["apgr"] + 0.1 and plot.stat().st_size > 0

    assert main(["evaluate", "--model", str(out), "--against", "builtin", "--data", str(data), "--plot", "",
                 "--quiet"]) == 0
    assert "not held out" in capsys.readouterr().err  # rows it was adapted on: said so

    scored = tmp_path / "scores.jsonl"
    assert main(["score", "--model", str(out), "--in", str(test), "--out", str(scored), "--quiet"]) == 0
    assert len(scored.read_text().splitlines()) == 80


@pytest.mark.slow
def test_adapt_refuses_a_checkpoint_worse_on_held_out_labels_unless_forced(tmp_path: Path) -> None:
    start = _start_checkpoint(tmp_path)
    data = _labels(tmp_path / "mine.jsonl", 120, 1)
    out = tmp_path / "adapted"
    backwards = [Candidate(None, 8, -1.0)]  # a recipe that learns the labels backwards: always worse
    with pytest.raises(AdaptError, match="worse than"):
        adapt_checkpoint([data], out, source=str(start), candidates=backwards, log=lambda _: None)
    assert not out.exists()
    meta = adapt_checkpoint([data], out, source=str(start), candidates=backwards, force=True, log=lambda _: None)
    held_out = meta["adaptation"]["held_out"]
    assert held_out["adapted"]["apgr"] < held_out["start"]["apgr"] and (out / "adapter.safetensors").exists()


def test_adapt_refuses_too_few_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _labels(tmp_path / "few.jsonl", 10, 1)
    assert main(["adapt", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "at least" in capsys.readouterr().err
