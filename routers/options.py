"""What a router is built from: the classifier's options and their defaults, written once for settings and CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

RuntimeChoice = Literal["auto", "onnx", "torch"]
RUNTIMES: tuple[RuntimeChoice, ...] = get_args(RuntimeChoice)


@dataclass(frozen=True, slots=True)
class ClassifierOptions:
    """How the classifier router loads and batches; ``gateway.settings.ClassifierSettings`` takes its defaults here.

    Bounds (``max_length`` within 8..512 and so on) are checked where an operator writes them, in settings.
    """

    path: str = "builtin"  # "builtin" = the shipped default router; else a checkpoint directory
    max_length: int = 256  # token cap per routing text
    max_batch: int = 32  # texts scored in one forward pass
    batch_wait_ms: float = 2.0  # how long a batch waits for companions while traffic is concurrent
    queue_size: int = 512  # waiting texts; more are refused at once (the fail-safe tier answers)
    cache_size: int = 10_000  # identical routing texts remembered (LRU)
    threads: int = 2  # CPU threads of the scoring runtime
    timeout_s: float = 2.0  # a score later than this: the fail-safe tier answers
    # auto: ONNX Runtime where the checkpoint has an ONNX export (no torch imported), else torch (logged).
    runtime: RuntimeChoice = "auto"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown classifier runtime {self.runtime!r}; choose {', '.join(RUNTIMES)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ClassifierOptions:
        """Options from keyword values (``ClassifierSettings.model_dump()``); an unknown key is a clear error."""
        unknown = set(values) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown classifier options: {sorted(unknown)}")
        return cls(**values)


CLASSIFIER_DEFAULTS = ClassifierOptions()


@dataclass(frozen=True, slots=True)
class RouterOptions:
    """Everything any router kind is built from; each kind reads the part it needs."""

    seed: int | None = None  # the random baseline's seed (reproducible tests and baselines)
    classifier: ClassifierOptions = CLASSIFIER_DEFAULTS


ROUTER_DEFAULTS = RouterOptions()
