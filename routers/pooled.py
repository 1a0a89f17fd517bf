"""The shipped default's architecture: a frozen, truncated encoder, mean pooling and a small MLP ensemble.

Why not fine-tune the encoder: on the shared data, a head over the frozen lower layers ranks prompts of
MMLU subjects it never saw better than fine-tuned top layers (which learn each training subject's
difficulty), and stopping at layer 3 of 6 halves the CPU cost of a decision. The encoder comes unchanged
from its package, so the checkpoint is only the head (about 1 MB) plus metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


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
        self.spec = spec
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
