"""CLI round trips: train on a small sample, then score, evaluate and calibrate with the checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from routers.classifier import EncoderScorer
from routers.cli import main
from routers.errors import ClassifierError
from tests.support.tiny_encoder import WORDS, build_tiny_encoder

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing"


def _user_data(path: Path, n: int = 120) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        hard = i % 3 == 0
        words = rng.choices(WORDS, k=rng.randint(3, 12)) + (["prove", "theorem", "integral"] if hard else ["hi"])
        row = {"prompt": " ".join(words), "small_score": 2 if hard else 9, "large_score": 9}
        lines.append(
            json.dumps(row)
            if i % 2
            else json.dumps({"messages": [{"role": "user", "content": row.pop("prompt")}], **row})
        )
    path.write_text("\n".join(lines) + "\n")
    return path


HEADS = {
    "mean-mlp": [
        "--encoder-layers",
        "1",
        "--head-hidden",
        "16",
        "--head-members",
        "2",
        "--epochs",
        "30",
    ],
    "classifier": ["--head", "classifier", "--format", "delta", "--trainable-layers", "1", "--epochs", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("head", sorted(HEADS))
def test_train_score_evaluate_calibrate_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], head: str
) -> None:
    base = build_tiny_encoder(tmp_path / "base")
    data = _user_data(tmp_path / "mine.jsonl")
    ckpt = tmp_path / "ckpt"
    args = ["train", "--data", str(data), "--base", str(base), "--out", str(ckpt), *HEADS[head]]
    assert main([*args, "--label", "large-better", "--max-length", "32", "--batch-size", "16", "--quiet"]) == 0
    meta = json.loads((ckpt / "metadata.json").read_text())
    assert meta["format"] == {"mean-mlp": "pooled", "classifier": "delta"}[head]
    assert meta["label"]["name"] == "large-better" and meta["data"]["anchor_examples"] > 0
    assert len(meta["data"]["sha256"]) == 64 and meta["calibration"]["table"] and "dev" in meta["metrics"]
    assert 0.0 <= meta["threshold"] <= 1.0

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"messages": [{"role": "user", "content": "prove theorem"}]}\n')
    out = tmp_path / "scores.jsonl"
    score = ["score", "--in", str(prompts), "--out", str(out), "--model", str(ckpt), "--threshold", "0.5"]
    assert main([*score, "--runtime", "torch"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and all(r["tier"] in ("small", "large") for r in rows)
    assert rows[1]["score"] > rows[0]["score"]  # the data's hard rows say "prove theorem"
    direct = EncoderScorer.load(str(ckpt)).score_batch(["hi", "prove theorem"])
    assert [r["score"] for r in rows] == pytest.approx(direct, abs=1e-5)
    assert meta["onnx"]["file"] == "model.int8.onnx"  # exported at train time; auto serves it
    assert main(score) == 0
    onnx_rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in onnx_rows] == pytest.approx(direct, abs=0.01)

    plot, numbers = tmp_path / "eval.png", tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(data),
                "--split",
                "all",
                "--model",
                str(ckpt),
                "--plot",
                str(plot),
                "--json",
                str(numbers),
                "--quiet",
            ]
        )
        == 0
    )
    assert plot.stat().st_size > 1000
    result = json.loads(numbers.read_text())["all"]
    assert result["oracle"]["apgr"] >= result["router"]["apgr"] and result["random"]["apgr"] == 0.5
    assert "CPT(50%)" in capsys.readouterr().out

    assert (
        main(
            [
                "calibrate",
                "--data",
                str(prompts),
                "--target-large-share",
                "0.5",
                "--model",
                str(ckpt),
                "--quiet",
            ]
        )
        == 0
    )
    assert "threshold:" in capsys.readouterr().out


def test_delta_checkpoint_without_weights_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "delta", "base": str(tmp_path)}))
    with pytest.raises(ClassifierError, match="untrained head"):
        EncoderScorer.load(str(tmp_path))


def test_commands_report_a_bad_checkpoint_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "pooled", "base": str(tmp_path)}))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    assert main(["calibrate", "--data", str(prompts), "--target-large-share", "0.3", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tiergate calibrate:") and "untrained head" in err and "Traceback" not in err


@pytest.mark.data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared routing data not found at {SHARED}")
def test_evaluate_reads_the_shared_held_out_arena_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = build_tiny_encoder(tmp_path / "base")
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(SHARED),
                "--split",
                "val-arena",
                "--model",
                str(base),
                "--max-length",
                "32",
                "--plot",
                "",
                "--quiet",
            ]
        )
        == 0
    )
    assert "Arena, held-out prompts" in capsys.readouterr().out
