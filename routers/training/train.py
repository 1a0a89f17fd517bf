"""Fine-tuning: frozen lower encoder layers run once and are cached, the top layers and head are trained."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.masking_utils import create_bidirectional_mask

from routers.training.data import Example, LabelName, label_of
from routers.training.evaluate import curve

HeadKind = Literal["mean-mlp", "classifier"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Defaults: the shipped default's recipe (``mean-mlp`` over the first 3 frozen layers)."""

    label: LabelName = "soft-gap"
    head: HeadKind = "mean-mlp"  # mean-mlp: frozen encoder + MLP ensemble; classifier: fine-tune the top blocks
    encoder_layers: int | None = 3  # mean-mlp: keep only the first N encoder blocks (None: all)
    head_hidden: int = 256
    head_members: int = 5
    trainable_layers: int = 2  # classifier: top encoder layers fine-tuned; the rest (and embeddings) stay frozen
    max_length: int = 128
    batch_size: int = 32
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.1
    seed: int = 0
    group_weights: dict[str, float] = field(default_factory=dict)  # e.g. {"arena": 3.0}
    progress: bool = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer blocks of a BERT- or DistilBERT-family classifier."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer"):
        module: Any = base
        for part in path.split("."):
            module = getattr(module, part, None)  # walks a dotted path of a transformers model: no contract of ours
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"unsupported encoder architecture: {type(model).__name__}")


def head(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The classifier's own pooling and head applied to final hidden states (as its ``forward`` does)."""
    modules: Any = model
    # transformers architectures differ here (BERT has a pooler, DistilBERT has none): not a contract of ours.
    if getattr(model.base_model, "pooler", None) is not None:
        pooled = modules.base_model.pooler(hidden)
        return modules.classifier(modules.dropout(pooled))  # type: ignore[no-any-return]
    pooled = torch.relu(modules.pre_classifier(hidden[:, 0]))
    return modules.classifier(modules.dropout(pooled))  # type: ignore[no-any-return]


def freeze_lower(model: PreTrainedModel, trainable_layers: int) -> int:
    """Freeze everything below the top ``trainable_layers`` blocks; returns how many blocks are frozen."""
    layers = encoder_layers(model)
    frozen = max(0, len(layers) - trainable_layers)
    for p in model.parameters():
        p.requires_grad = False
    for p in (p for layer in layers[frozen:] for p in layer.parameters()):
        p.requires_grad = True
    for name, p in model.named_parameters():
        if name.startswith(("classifier.", "pre_classifier.")) or ".pooler." in f".{name}":
            p.requires_grad = True
    return frozen


def _run_layers(
    model: PreTrainedModel, layers: Iterable[nn.Module], h: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    full_mask = create_bidirectional_mask(config=model.config, inputs_embeds=h, attention_mask=mask)
    for layer in layers:
        out = layer(h, attention_mask=full_mask)
        h = out[0] if isinstance(out, tuple) else out
    return h


@dataclass
class Batch:
    hidden: torch.Tensor  # fp16 cache of the frozen part's output
    mask: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    index: torch.Tensor  # positions in the original example list


def cache_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    config: TrainConfig,
    frozen: int,
    desc: str,
) -> list[Batch]:
    """Run the frozen bottom once, in length-sorted batches (little padding), and keep its output."""
    lengths = [
        len(ids)
        for ids in tokenizer([e.text for e in examples], truncation=True, max_length=config.max_length)["input_ids"]
    ]
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    layers = encoder_layers(model)[:frozen]
    encoder: Any = model.base_model
    batches = []
    model.train(False)
    for start in tqdm(range(0, len(order), config.batch_size), desc=desc, disable=not config.progress):
        idx = order[start : start + config.batch_size]
        enc = tokenizer(
            [examples[i].text for i in idx],
            truncation=True,
            max_length=config.max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            h = encoder.embeddings(input_ids=enc["input_ids"])
            h = _run_layers(model, layers, h, enc["attention_mask"])
        targets = torch.tensor([label_of(examples[i], config.label) for i in idx], dtype=torch.float32)
        weights = torch.tensor([config.group_weights.get(examples[i].group, 1.0) for i in idx])
        batches.append(Batch(h.to(torch.float16), enc["attention_mask"], targets, weights, torch.tensor(idx)))
    return batches


def forward_top(model: PreTrainedModel, frozen: int, batch: Batch) -> torch.Tensor:
    """Logits from the cached frozen output through the trainable top blocks and head."""
    h = _run_layers(model, encoder_layers(model)[frozen:], batch.hidden.float(), batch.mask)
    return head(model, h)[:, -1]


def predict(model: PreTrainedModel, frozen: int, batches: Sequence[Batch], n: int) -> list[float]:
    model.train(False)
    scores = [0.0] * n
    with torch.inference_mode():
        for batch in batches:
            probs = torch.sigmoid(forward_top(model, frozen, batch)).tolist()
            for i, p in zip(batch.index.tolist(), probs, strict=True):
                scores[i] = p
    return scores


def dev_apgr(examples: Sequence[Example], scores: Sequence[float]) -> float:
    return curve("dev", scores, [e.small for e in examples], [e.large for e in examples]).apgr


def fit(
    model: PreTrainedModel,
    frozen: int,
    train: Sequence[Batch],
    config: TrainConfig,
    dev: tuple[Sequence[Example], Sequence[Batch]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the top blocks and head with soft-target BCE; keep the epoch with the best dev APGR."""
    seed_everything(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = max(1, config.epochs * len(train))
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / (total - warmup + 1)))
    )
    rng = random.Random(config.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        losses = []
        for b in tqdm(order, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress):
            batch = train[b]
            logits = forward_top(model, frozen, batch)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
            loss = (loss * batch.weights).sum() / batch.weights.sum()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if dev is not None:
            record["dev_apgr"] = dev_apgr(dev[0], predict(model, frozen, dev[1], len(dev[0])))
            if best is None or record["dev_apgr"] > best[0]:
                best = (record["dev_apgr"], {k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append(record)
        log(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
    if best is not None:
        model.load_state_dict(best[1])
    model.train(False)
    return {"history": history, "train_seconds": round(time.perf_counter() - started, 1)}
