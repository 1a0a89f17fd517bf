"""Encoder scoring and checkpoint loading with a tiny random-weight BERT built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from routers.checkpoint import load_checkpoint, save_checkpoint, trainable_names
from routers.classifier import EncoderScorer, probabilities
from routers.errors import ClassifierError
from routers.training.train import freeze_lower
from tests.support.tiny_encoder import build_tiny_encoder


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return build_tiny_encoder(tmp_path / "tiny")


def test_scores_are_probabilities_in_input_order_with_truncation(tiny: Path) -> None:
    scorer = EncoderScorer.load(str(tiny), max_length=12, threads=1)
    texts = ["hello", "prove that the theorem holds for every prime number " * 40, "what is law"]
    scores = scorer.score_batch(texts)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scorer.score_batch(texts[::-1]) == pytest.approx(scores[::-1], abs=1e-5)
    assert scorer.score_batch([]) == []


def test_two_class_heads_score_the_last_class() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 10.0]])
    assert probabilities(logits).tolist() == pytest.approx([0.5, 1.0], abs=1e-4)


def test_directory_without_a_trained_head_is_refused(tmp_path: Path, tiny: Path) -> None:
    config = BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(str(tmp_path / "bare"))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "bare" / name).write_bytes((tiny / name).read_bytes())
    with pytest.raises(ClassifierError, match="no trained classification head"):
        load_checkpoint(str(tmp_path / "bare"))


def test_missing_directory_is_a_classifier_error(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="not found"):
        EncoderScorer.load(str(tmp_path / "absent"))


def test_delta_checkpoint_round_trips_the_trained_tensors_only(tmp_path: Path, tiny: Path) -> None:
    model, tokenizer, _ = load_checkpoint(str(tiny))
    freeze_lower(model, trainable_layers=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    names = trainable_names(model)
    assert any(n.startswith("classifier.") for n in names) and not any("embeddings" in n for n in names)
    out = tmp_path / "delta"
    save_checkpoint(model, tokenizer, out, {"base": str(tiny), "num_labels": 1, "max_length": 16}, delta_names=names)
    assert json.loads((out / "metadata.json").read_text())["format"] == "delta"
    texts = ["hello", "prove the theorem"]
    expected = EncoderScorer(model, tokenizer, max_length=16).score_batch(texts)
    loaded = EncoderScorer.load(str(out), max_length=64)
    assert loaded.max_length == 16  # capped at the training length
    assert loaded.score_batch(texts) == pytest.approx(expected, abs=2e-3)  # fp16 deltas


def test_int8_quantisation_keeps_scores_close(tiny: Path) -> None:
    exact = EncoderScorer.load(str(tiny), quantize=False).score_batch(["hello there", "what is law"])
    quick = EncoderScorer.load(str(tiny), quantize=True).score_batch(["hello there", "what is law"])
    assert quick == pytest.approx(exact, abs=0.05)
