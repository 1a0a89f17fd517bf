"""An adapted checkpoint's correction of the head's score: a gated residual ridge and a nearest-neighbour memory.

Format (``adapter.safetensors`` beside ``head.safetensors``; ``metadata.json`` ``adapter`` holds the scalars),
so any runtime that can produce the pooled features and the head's probability can apply it:

- ``z = layer_norm(pooled)`` (no parameters, eps 1e-5) and ``u = z / |z|``;
- ``f = (request_features(text) - feature_mean) / feature_scale`` (:mod:`routers.training.request_features`);
- ``sims = u @ memory.T``; ``top`` = the ``knn_k`` largest; gate ``g = clip((mean(top) - gate_lo) /
  (gate_hi - gate_lo), 0, 1)``: prompts unlike every labelled one keep the default's score;
- residual ``r = ([(z - embed_mean) / embed_scale, f] @ ridge_w + ridge_b)`` (0 when ``ridge_w`` is absent);
- neighbours ``k = mean(memory_residual[top])`` (0 when ``knn_weight`` is 0);
- ``score = clip(prior + g * (r + knn_weight * k), 0, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file, save_file

from routers.training.request_features import feature_matrix

ADAPTER_FILE = "adapter.safetensors"
Array = NDArray[np.float64]


SMALL_BATCH = 64


def _product(queries: Array, keys: NDArray[Any]) -> Array:
    """``queries @ keys.T``. A serving batch uses einsum in fp32 on the calling thread: numpy's BLAS threads
    would contend with torch's for the same cores (measured 0.16 ms against 2.4 ms per decision on 2 busy
    cores); large products (fitting) use BLAS."""
    if len(queries) <= SMALL_BATCH:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        product: Array = np.einsum("id,md->im", q, np.asarray(keys, dtype=np.float32)).astype(np.float64)
        return product
    return np.asarray(queries @ np.asarray(keys, dtype=np.float64).T, dtype=np.float64)


def layer_norm(x: Array) -> Array:
    """Parameter-free layer norm over the last axis, as :class:`routers.pooled.MLPHead` applies it."""
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + 1e-5), dtype=np.float64)


def unit(x: Array) -> Array:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12), dtype=np.float64)


@dataclass(frozen=True)
class Neighbours:
    """Each query row's nearest memory rows, most similar first: indices and cosine similarities ``[n, k]``."""

    index: NDArray[np.intp]
    sims: Array

    @classmethod
    def of(
        cls, queries: Array, memory: NDArray[Any], k: int, exclude_self: bool = False, chunk: int = 1024
    ) -> Neighbours:
        k = max(1, min(k, len(memory) - (1 if exclude_self else 0)))
        index = np.empty((len(queries), k), dtype=np.intp)
        sims = np.empty((len(queries), k))
        keys = np.ascontiguousarray(memory, dtype=np.float32)  # no copy when it is already (the adapter's)
        for start in range(0, len(queries), chunk):
            block = _product(queries[start : start + chunk], keys)
            if exclude_self:
                rows = np.arange(block.shape[0])
                block[rows, rows + start] = -np.inf
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            top_sims = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            index[start : start + chunk] = np.take_along_axis(top, order, axis=1)
            sims[start : start + chunk] = np.take_along_axis(top_sims, order, axis=1)
        return cls(index, sims)

    def first(self, k: int) -> tuple[NDArray[np.intp], Array]:
        return self.index[:, :k], self.sims[:, :k]

    def restrict(self, rows: NDArray[np.intp], members: NDArray[np.intp], k: int) -> Neighbours:
        """Neighbours of ``rows`` among ``members`` only (renumbered to positions in ``members``), first ``k``.

        Cheap cross-validation: neighbours are found once over all rows, then each fold drops its own.
        """
        position = np.full(len(self.index), -1, dtype=np.intp)  # built over all rows as queries and memory
        position[members] = np.arange(len(members))
        mapped = position[self.index[rows]]
        order = np.argsort(mapped < 0, axis=1, kind="stable")[:, :k]
        return Neighbours(np.take_along_axis(mapped, order, axis=1), np.take_along_axis(self.sims[rows], order, axis=1))


@dataclass
class Adapter:
    """The fitted correction; see the module docstring for the arithmetic."""

    method: str
    memory: NDArray[np.float32]  # [m, width] unit vectors of the labelled prompts (fp32: the serving product)
    memory_residual: Array  # [m] label minus the score before the neighbour step
    knn_k: int
    knn_weight: float
    gate_lo: float
    gate_hi: float
    feature_mean: Array = field(default_factory=lambda: np.zeros(0))
    feature_scale: Array = field(default_factory=lambda: np.ones(0))
    embed_mean: Array = field(default_factory=lambda: np.zeros(0))
    embed_scale: Array = field(default_factory=lambda: np.ones(0))
    ridge_w: Array = field(default_factory=lambda: np.zeros(0))
    ridge_b: float = 0.0

    def gate(self, u: Array, near: Neighbours | None = None) -> tuple[Array, NDArray[np.intp]]:
        """Per-row gate in [0, 1] and the indices of each row's ``knn_k`` nearest memory rows."""
        near = near or Neighbours.of(u, self.memory, self.knn_k)
        top, sims = near.first(self.knn_k)
        span = self.gate_hi - self.gate_lo
        g = np.clip((sims.mean(1) - self.gate_lo) / span, 0.0, 1.0) if span > 1e-9 else np.ones(len(u))
        return np.asarray(g, dtype=np.float64), top

    def residual(self, z: Array, texts: Sequence[str]) -> Array:
        if self.ridge_w.size == 0:
            return np.zeros(len(z))
        x = np.hstack([(z - self.embed_mean) / self.embed_scale, self.features(texts)])
        return np.asarray(_product(x, self.ridge_w[None, :])[:, 0] + self.ridge_b, dtype=np.float64)

    def features(self, texts: Sequence[str]) -> Array:
        return np.asarray((feature_matrix(texts) - self.feature_mean) / self.feature_scale, dtype=np.float64)

    def apply(self, prior: Array, pooled: Array, texts: Sequence[str], near: Neighbours | None = None) -> Array:
        """Adapted scores in [0, 1] from the head's ``prior`` scores and the pooled features.

        ``near``: the rows' nearest memory rows, when the caller already has them (cross-validation).
        """
        z = layer_norm(np.asarray(pooled, dtype=np.float64))
        g, top = self.gate(unit(z), near)
        correction = self.residual(z, texts)
        if self.knn_weight:
            correction = correction + self.knn_weight * self.memory_residual[top].mean(1)
        return np.asarray(np.clip(np.asarray(prior) + g * correction, 0.0, 1.0), dtype=np.float64)

    def scalars(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "knn_k": self.knn_k,
            "knn_weight": self.knn_weight,
            "gate_lo": self.gate_lo,
            "gate_hi": self.gate_hi,
            "ridge_b": self.ridge_b,
            "file": ADAPTER_FILE,
        }

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``adapter.safetensors`` (fp32) and return the scalars for ``metadata.json`` ``adapter``."""
        tensors = {
            "memory": self.memory.astype(np.float32),
            "memory_residual": self.memory_residual.astype(np.float32),
            "feature_mean": self.feature_mean.astype(np.float32),
            "feature_scale": self.feature_scale.astype(np.float32),
        }
        if self.ridge_w.size:
            tensors |= {
                "ridge_w": self.ridge_w.astype(np.float32),
                "embed_mean": self.embed_mean.astype(np.float32),
                "embed_scale": self.embed_scale.astype(np.float32),
            }
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(directory / ADAPTER_FILE))
        return self.scalars()

    @classmethod
    def load(cls, directory: Path, scalars: dict[str, Any]) -> Adapter:
        """Read ``adapter.safetensors``; raises ``ValueError``/``OSError``/``KeyError`` when it is broken."""
        raw = load_file(str(directory / scalars.get("file", ADAPTER_FILE)))
        t = {k: v.astype(np.float64) for k, v in raw.items() if k != "memory"}
        adapter = cls(
            method=str(scalars["method"]),
            memory=np.ascontiguousarray(raw["memory"], dtype=np.float32),
            memory_residual=t["memory_residual"],
            knn_k=int(scalars["knn_k"]),
            knn_weight=float(scalars["knn_weight"]),
            gate_lo=float(scalars["gate_lo"]),
            gate_hi=float(scalars["gate_hi"]),
            feature_mean=t["feature_mean"],
            feature_scale=t["feature_scale"],
            embed_mean=t.get("embed_mean", np.zeros(0)),
            embed_scale=t.get("embed_scale", np.ones(0)),
            ridge_w=t.get("ridge_w", np.zeros(0)),
            ridge_b=float(scalars.get("ridge_b", 0.0)),
        )
        width = adapter.memory.shape[1] if adapter.memory.ndim == 2 else -1
        if width <= 0 or len(adapter.memory) != len(adapter.memory_residual) or adapter.knn_k < 1:
            raise ValueError("adapter memory and residuals do not match")
        if adapter.ridge_w.size and adapter.ridge_w.size != width + adapter.feature_mean.size:
            raise ValueError("adapter ridge weights do not match the memory width")
        return adapter
