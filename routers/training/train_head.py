"""Training the pooled head: embed every example once with the frozen encoder, then fit the MLP ensemble."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from routers.pooled import HeadSpec, MLPHead, PooledClassifier, mean_pool
from routers.training.data import Example, label_of
from routers.training.train import TrainConfig, dev_apgr, seed_everything

HEAD_BATCH = 256  # rows per optimiser step: the features are small, so larger batches than fine-tuning


def embed(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    config: TrainConfig,
    desc: str = "encoding",
) -> torch.Tensor:
    """Mean-pooled encoder output per text, ``[n, width]``, computed in length-sorted batches."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    width = int(encoder.config.hidden_size)
    out = torch.zeros(len(texts), width)
    encoder.train(False)
    for start in tqdm(range(0, len(order), config.batch_size), desc=desc, disable=not config.progress):
        idx = order[start : start + config.batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], truncation=True, max_length=config.max_length, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = encoder(**batch).last_hidden_state
            out[idx] = mean_pool(hidden, batch["attention_mask"]).float()
    return out


def fit_member(
    net: nn.Module, features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, config: TrainConfig
) -> list[float]:
    """Mini-batch AdamW on weighted soft-target BCE for ``config.epochs``; the mean loss of each epoch."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(features))
        total = 0.0
        for start in range(0, len(order), HEAD_BATCH):
            idx = order[start : start + HEAD_BATCH]
            logits: torch.Tensor = net(features[idx])[:, 0]
            batch_weights = weights[idx]
            loss = nn.functional.binary_cross_entropy_with_logits(logits, targets[idx], reduction="none")
            loss = (loss * batch_weights).sum() / batch_weights.sum()
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(features))
    net.train(False)
    return losses


def fit_head(
    features: torch.Tensor, examples: Sequence[Example], config: TrainConfig, spec: HeadSpec
) -> tuple[MLPHead, list[list[float]]]:
    """Each ensemble member trained on its own seed (its own initialisation and batch order)."""
    targets = torch.tensor([label_of(e, config.label) for e in examples], dtype=torch.float32)
    weights = torch.tensor([config.group_weights.get(e.group, 1.0) for e in examples], dtype=torch.float32)
    head = MLPHead(features.shape[1], spec)
    history = []
    for index, net in enumerate(head.members):
        seed_everything(config.seed + index)
        for layer in net.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        history.append(fit_member(nn.Sequential(head.norm, net), features, targets, weights, config))
    head.train(False)
    return head, history


def train_pooled(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[Example],
    dev: Sequence[Example],
    config: TrainConfig,
    spec: HeadSpec,
    log: Callable[[str], None] = print,
) -> tuple[PooledClassifier, list[float], dict[str, Any]]:
    """The trained classifier, its dev scores and the training record for the metadata."""
    started = time.perf_counter()
    features = embed(encoder, tokenizer, [e.text for e in train], config, "encoding (train)")
    head, history = fit_head(features, train, config, spec)
    dev_scores: list[float] = []
    record: dict[str, Any] = {"member_losses": [[round(x, 4) for x in h] for h in history]}
    if dev:
        with torch.inference_mode():
            logits = head(embed(encoder, tokenizer, [e.text for e in dev], config, "encoding (dev)"))[:, 0]
        dev_scores = torch.sigmoid(logits).tolist()
        record["dev_apgr"] = round(dev_apgr(dev, dev_scores), 4)
        log(f"dev APGR {record['dev_apgr']:.4f}; final member losses {np.round([h[-1] for h in history], 4)}")
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    return PooledClassifier(encoder, head), dev_scores, record
