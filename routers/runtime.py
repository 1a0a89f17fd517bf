"""Which runtime scores a checkpoint: ONNX Runtime where an export exists (no torch imported), else torch."""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

from routers.base import Scorer
from routers.onnx_classifier import OnnxScorer, export_exists

RuntimeName = Literal["onnx", "torch"]
RuntimeChoice = Literal["auto", "onnx", "torch"]
RUNTIMES: tuple[RuntimeChoice, ...] = ("auto", "onnx", "torch")

log = logging.getLogger("tiergate.router")


def choose_runtime(path: str, runtime: RuntimeChoice = "auto") -> RuntimeName:
    """``auto``: onnx when the checkpoint has an export and onnxruntime is installed, else torch (logged)."""
    if runtime != "auto":
        return runtime
    if not export_exists(path):
        log.info("router %s has no ONNX export: scoring with torch (export it with routers.training.onnx_export)", path)
        return "torch"
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("tokenizers") is None:
        log.info("onnxruntime or tokenizers is not installed: scoring router %s with torch", path)
        return "torch"
    return "onnx"


def load_scorer(path: str, *, runtime: RuntimeChoice = "auto", max_length: int = 256, threads: int = 2) -> Scorer:
    """A scorer for ``builtin`` or a checkpoint directory on the chosen runtime; torch is imported only for torch."""
    chosen = choose_runtime(path, runtime)
    log.info("router %s: %s runtime, %d threads", path, chosen, threads)
    if chosen == "onnx":
        return OnnxScorer.load(path, max_length=max_length, threads=threads)
    from routers.classifier import EncoderScorer

    return EncoderScorer.load(path, max_length=max_length, threads=threads)
