"""The shipped default's architecture: a frozen, truncated encoder, mean pooling and a small MLP ensemble.

Why not fine-tune the encoder: on the shared data, a head over the frozen lower layers ranks prompts of
MMLU subjects it never saw better than fine-tuned top layers (which learn each training subject's
difficulty), and stopping at layer 3 of 6 halves the CPU cost of a decision. The encoder comes unchanged
from its package, so the checkpoint is only the head (about 1 MB) plus metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from routers.errors import ClassifierError

HEAD_FILE = "head.safetensors"


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """An ensemble of ``members`` one-hidden-layer MLPs whose logits are averaged."""

    hidden: int = 256
    members: int = 5
    dropout: float = 0.1

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> HeadSpec:
        return cls(**meta.get("head", {}))

    def as_metadata(self) -> dict[str, Any]:
        return asdict(self)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The average of the token vectors that are not padding."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def member(width: int, spec: HeadSpec) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, spec.hidden), nn.GELU(), nn.Dropout(spec.dropout), nn.Linear(spec.hidden, 1))


class MLPHead(nn.Module):
    """Pooled vector -> layer norm (no parameters) -> each member's logit -> their mean, shape ``[batch, 1]``."""

    def __init__(self, width: int, spec: HeadSpec) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.members = nn.ModuleList(member(width, spec) for _ in range(spec.members))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        normed = self.norm(pooled)
        return torch.stack([m(normed) for m in self.members]).mean(0)


class PooledClassifier(nn.Module):
    """Encoder + mean pooling + :class:`MLPHead`; called like a transformers sequence classifier."""

    def __init__(self, encoder: PreTrainedModel, head: MLPHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: Any) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: Any) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.head(self.pooled(input_ids, attention_mask, **extra)))


def truncated_encoder(base: Path, num_layers: int | None) -> PreTrainedModel:
    """The base encoder with only its first ``num_layers`` blocks (all of them for ``None``)."""
    config = AutoConfig.from_pretrained(str(base))
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    encoder: PreTrainedModel = AutoModel.from_pretrained(str(base), config=config)
    encoder.train(False)
    return encoder


def save_head(head: MLPHead, out: Path) -> None:
    """The head's tensors in fp16 (the encoder is not saved: it comes from ``metadata["base"]``)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(out / HEAD_FILE))


def load_pooled(directory: Path, base: Path, meta: dict[str, Any]) -> PooledClassifier:
    """A ``format: pooled`` checkpoint; refuses to run without its trained head."""
    head_file = directory / HEAD_FILE
    if not head_file.exists():
        raise ClassifierError(
            f"router weights missing: {head_file} not found; refusing to score with an untrained head "
            "(reinstall tiergate or rebuild the default with `tiergate train`)"
        )
    encoder = truncated_encoder(base, meta.get("num_layers"))
    head = MLPHead(int(encoder.config.hidden_size), HeadSpec.from_metadata(meta))
    tensors = {k: v.float() for k, v in load_file(str(head_file)).items()}
    missing, unexpected = head.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ClassifierError(f"{head_file} does not match the head in metadata.json: {missing or unexpected}")
    model = PooledClassifier(encoder, head)
    model.train(False)
    return model
