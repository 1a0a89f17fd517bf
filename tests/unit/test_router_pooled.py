"""The pooled architecture: mean pooling, the MLP ensemble, head training and its checkpoint round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from routers.checkpoint import HEAD_FILE, save_pooled_checkpoint, truncated_encoder
from routers.classifier import EncoderScorer
from routers.errors import ClassifierError
from routers.pooled import HeadSpec, MLPHead, PooledClassifier, mean_pool
from routers.training.data import Example
from routers.training.train import TrainConfig
from routers.training.train_head import embed, fit_head
from tests.support.tiny_encoder import build_tiny_encoder

SPEC = HeadSpec(hidden=8, members=3)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return build_tiny_encoder(tmp_path / "tiny")


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_head_logit_is_the_mean_of_its_members() -> None:
    torch.manual_seed(0)
    head = MLPHead(4, SPEC).train(False)
    pooled = torch.randn(5, 4)
    each = torch.stack([m(head.norm(pooled)) for m in head.members])
    assert head(pooled).shape == (5, 1)
    assert torch.allclose(head(pooled), each.mean(0))


def test_truncated_encoder_keeps_the_first_blocks_unchanged(tiny: Path) -> None:
    full, short = truncated_encoder(tiny, None), truncated_encoder(tiny, 1)
    assert len(full.encoder.layer) == 2 and len(short.encoder.layer) == 1
    assert torch.equal(full.encoder.layer[0].output.dense.weight, short.encoder.layer[0].output.dense.weight)


def _examples() -> list[Example]:
    easy = [Example(f"hi thanks {w}", 1.0, 1.0, "user", f"e{i}") for i, w in enumerate(("a", "b", "c", "d") * 6)]
    hard = [Example(f"prove theorem {w}", 0.0, 1.0, "user", f"h{i}") for i, w in enumerate(("a", "b", "c", "d") * 6)]
    return easy + hard


def test_fitted_head_separates_what_the_labels_separate(tiny: Path) -> None:
    encoder = truncated_encoder(tiny, 1)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    examples = _examples()
    config = TrainConfig(label="soft-gap", epochs=60, lr=1e-2, weight_decay=0.0, max_length=16, progress=False)
    features = embed(encoder, tokenizer, [e.text for e in examples], config)
    assert features.shape == (len(examples), 32)
    head, history = fit_head(features, examples, config, SPEC)
    assert len(history) == SPEC.members and all(h[-1] < h[0] for h in history)
    with torch.inference_mode():
        scores = torch.sigmoid(head(features)[:, 0])
    easy, hard = scores[:24], scores[24:]
    assert float(hard.min()) > float(easy.max())


def test_checkpoint_round_trip_and_refusals(tmp_path: Path, tiny: Path) -> None:
    torch.manual_seed(1)
    model = PooledClassifier(truncated_encoder(tiny, 1), MLPHead(32, SPEC)).train(False)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    texts = ["hello there", "prove the theorem for every prime"]
    expected = EncoderScorer(model, tokenizer, max_length=16).score_batch(texts)
    meta = {"base": str(tiny), "num_layers": 1, "head": SPEC.as_metadata(), "max_length": 16}
    out = tmp_path / "ckpt"
    save_pooled_checkpoint(model, out, {**meta, "data": {}, "metrics": {}})
    assert sorted(p.name for p in out.iterdir()) == [HEAD_FILE, "metadata.json"]
    assert json.loads((out / "metadata.json").read_text())["format"] == "pooled"
    loaded = EncoderScorer.load(str(out), max_length=64)
    assert loaded.max_length == 16 and loaded.score_batch(texts) == pytest.approx(expected, abs=2e-3)

    wrong = json.loads((out / "metadata.json").read_text())
    (out / "metadata.json").write_text(json.dumps({**wrong, "head": {**SPEC.as_metadata(), "hidden": 16}}))
    with pytest.raises(ClassifierError, match="size mismatch|does not match"):
        EncoderScorer.load(str(out))
    (out / HEAD_FILE).unlink()
    with pytest.raises(ClassifierError, match="untrained head"):
        EncoderScorer.load(str(out))
