"""Routers by name: the encoder classifier and the random / always-small / always-large baselines."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from routers.base import Router, Scorer
from routers.errors import ClassifierNotReadyError
from routers.swap import SwappableRouter

if TYPE_CHECKING:
    from routers.runtime import RuntimeChoice

ROUTER_NAMES = ("classifier", "random", "always-small", "always-large")
CLASSIFIER_OPTIONS = (
    "path",
    "max_length",
    "max_batch",
    "batch_wait_ms",
    "queue_size",
    "cache_size",
    "threads",
    "timeout_s",
    "runtime",
)

BATCHING_OPTIONS = ("max_batch", "batch_wait_ms", "queue_size", "cache_size")


class ConstantRouter:
    """Scores every request the same: 0.0 (always small) or 1.0 (always large)."""

    def __init__(self, name: str, value: float) -> None:
        self.name = name
        self._value = value
        self._started = False

    async def start(self) -> None:
        self._started = True

    def ready(self) -> bool:
        return self._started

    async def score(self, text: str) -> float:
        if not self._started:
            raise ClassifierNotReadyError(f"router {self.name!r} is not started or is closed")
        return self._value

    async def aclose(self) -> None:
        self._started = False

    def queue_depth(self) -> int:
        return 0


class RandomRouter(ConstantRouter):
    """A uniform random score per request (seeded for reproducible tests and baselines)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__("random", 0.0)
        self._rng = random.Random(seed)

    async def score(self, text: str) -> float:
        await super().score(text)
        return self._rng.random()


def build_router(name: str, *, seed: int | None = None, **classifier_options: Any) -> Router:
    """A router by name; ``classifier_options`` are the fields of ``gateway.settings.ClassifierSettings``."""
    unknown = set(classifier_options) - set(CLASSIFIER_OPTIONS)
    if unknown:
        raise ValueError(f"unknown classifier options: {sorted(unknown)}")
    if name == "always-small":
        return ConstantRouter(name, 0.0)
    if name == "always-large":
        return ConstantRouter(name, 1.0)
    if name == "random":
        return RandomRouter(seed)
    if name != "classifier":
        raise ValueError(f"unknown router {name!r}; choose one of {', '.join(ROUTER_NAMES)}")
    path = str(classifier_options.get("path", "builtin"))
    max_length = int(classifier_options.get("max_length", 256))
    threads = int(classifier_options.get("threads", 2))
    runtime = cast("RuntimeChoice", str(classifier_options.get("runtime", "auto")))
    if runtime not in ("auto", "onnx", "torch"):
        raise ValueError(f"unknown classifier runtime {runtime!r}; choose auto, onnx or torch")

    def loader(checkpoint: str) -> Callable[[], Scorer]:
        def load() -> Scorer:
            # Imported here: the runtime (onnxruntime, or torch and transformers) loads only for a classifier.
            from routers.runtime import load_scorer

            return load_scorer(checkpoint, runtime=runtime, max_length=max_length, threads=threads)

        return load

    batching = {k: float(classifier_options[k]) for k in BATCHING_OPTIONS if k in classifier_options}
    return SwappableRouter(path, loader, batching=batching)
