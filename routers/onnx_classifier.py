"""ONNX Runtime scoring: texts -> ``P(large needed)`` with an exported checkpoint and the Rust tokenizer, no torch."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routers.artifacts import BUILTIN, checkpoint_dir, onnx_export_of, read_metadata
from routers.errors import ClassifierError

# A batch at least this many tokens (rows x padded length) leaves tens of MB of freed activations behind.
TRIM_AFTER_TOKENS = 1024


def session_options(threads: int) -> Any:
    """Settings measured on 2 cores (bench/RESULTS.md): all graph optimisations, one inter-op thread, no arena.

    ONNX Runtime's CPU arena keeps the largest batch's activations for good (about 220 MB more RSS after one
    batch of 32 prompts of 128 tokens); without it, memory goes back to malloc (see ``_trimmer``).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # errors only: the 8-bit graph's opset notes are expected
    return options


def _trimmer() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: hands freed heap back to the OS (about 5 ms after a large batch); else a no-op."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)  # a C library symbol: glibc has it, musl does not
    if trim is None:
        return lambda: None

    def release() -> None:
        trim(0)

    return release


def checkpoint_length(meta: dict[str, Any], max_length: int) -> int:
    """The token cap: ``max_length`` bounded by the checkpoint's training length; 0 means the checkpoint's own."""
    trained = int(meta.get("max_length") or 512)
    return min(max_length, trained) if max_length > 0 else trained


class OnnxScorer:
    """Implements :class:`routers.base.Scorer` like ``EncoderScorer``: same truncation, padding and output.

    Not thread-safe (the tokenizer's padding and truncation are set once); call it from one worker thread.
    """

    def __init__(self, session: Any, tokenizer: Any, *, max_length: int, metadata: dict[str, Any]) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.metadata = metadata
        self._inputs = {i.name for i in session.get_inputs()}
        self._trim = _trimmer()
        padding = tokenizer.padding or {}
        tokenizer.enable_padding(pad_id=int(padding.get("pad_id", 0)), pad_token=str(padding.get("pad_token", "[PAD]")))
        tokenizer.enable_truncation(max_length=max_length)
        self._trim()  # loading parsed a 20 MB protobuf that is garbage now

    @classmethod
    def load(cls, path: str = BUILTIN, *, max_length: int = 256, threads: int = 2) -> OnnxScorer:
        """Load the ONNX export of ``builtin`` or a checkpoint directory (see ``routers.training.onnx_export``)."""
        directory = checkpoint_dir(path)
        files = onnx_export_of(directory)
        if files is None:
            raise ClassifierError(
                f"no ONNX export in {directory}: run `python -m routers.training.onnx_export {path}` "
                "or set routing.classifier.runtime: torch"
            )
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ClassifierError(f"the ONNX runtime needs onnxruntime and tokenizers installed: {exc}") from exc
        meta = read_metadata(directory)
        graph, tokenizer_file = files
        try:
            session = onnxruntime.InferenceSession(
                str(graph), session_options(threads), providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise ClassifierError(f"cannot load the ONNX router from {directory}: {exc}") from exc
        return cls(session, tokenizer, max_length=checkpoint_length(meta, max_length), metadata=meta)

    @property
    def recommended_threshold(self) -> float | None:
        """The export's own threshold where the checkpoint's was picked on other scores (torch int8), else that one."""
        value = self.metadata.get("onnx", {}).get("threshold", self.metadata.get("threshold"))
        return float(value) if value is not None else None

    def score_batch(self, texts: Sequence[str]) -> list[float]:
        """Scores in [0, 1]; truncation at ``max_length`` tokens, padding only to the longest in the batch."""
        if not texts:
            return []
        try:
            encodings = self.tokenizer.encode_batch(list(texts))
            feed = {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            }
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
            (scores,) = self.session.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - the batcher turns this into one clear error per request
            raise ClassifierError(f"ONNX classifier run failed: {exc}") from exc
        if feed["input_ids"].size >= TRIM_AFTER_TOKENS:
            self._trim()
        return [float(p) for p in scores]


def export_exists(path: str) -> bool:
    """Whether ``builtin`` or the checkpoint directory has an ONNX export next to it."""
    return onnx_export_of(Path(checkpoint_dir(path))) is not None
