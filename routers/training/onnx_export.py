"""Export a router checkpoint to one ONNX graph (encoder, pooling, head, probability) with 8-bit weights.

Why weight-only 8 bits and not ONNX Runtime's dynamic int8 quantisation: dynamic quantisation also rounds
every activation to 8 bits per tensor, which moved the shipped default's scores by up to 0.15 (mean 0.03)
on held-out prompts; its threshold sits where a 0.01 shift moves about 4% of traffic. Weights in 8 bits
per block of 32 (``MatMulNBits``) and word embeddings in 8 bits per row keep the graph at about 19 MB and
the scores within 0.01 of the fp32 model (tests/unit/test_router_onnx.py, bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from routers.artifacts import BUILTIN, ONNX_FILE, TOKENIZER_FILE, checkpoint_dir, read_metadata, write_metadata
from routers.checkpoint import load_checkpoint
from routers.errors import ClassifierError

OPSET = 17
BLOCK_SIZE = 32
ACCURACY_LEVEL: int | None = None
# Gathers over tables at least this large (the word embeddings, not position or type embeddings) go 8-bit.
EMBEDDING_MIN_ELEMENTS = 65_536
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "score"


class ScoreGraph(nn.Module):
    """``(input_ids, attention_mask) -> P(large needed)`` of shape ``[batch]``, as ``EncoderScorer`` computes it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, -1]


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The TorchScript exporter's deprecation notice and the quantiser's opset notes are not news here."""
    quantizer_log = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quantizer_log.level
    quantizer_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        quantizer_log.setLevel(level)


def export_fp32(model: nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """The whole scoring graph in fp32 with dynamic batch and sequence axes."""
    sample = tokenizer(["hello", "prove that there are infinitely many primes"], padding=True, return_tensors="pt")
    graph = ScoreGraph(model)
    graph.train(False)
    axes = {"batch": 0, "sequence": 1}
    dynamic = {name: {i: axis for axis, i in axes.items()} for name in INPUT_NAMES}
    with _quiet_exporters(), torch.inference_mode():
        torch.onnx.export(
            graph,
            (sample["input_ids"], sample["attention_mask"]),
            str(out),
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles BERT's masks
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**dynamic, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )


def quantize_embeddings(model: Any, min_elements: int = EMBEDDING_MIN_ELEMENTS) -> int:
    """Rewrite each large ``Gather`` table as int8 rows with one fp32 scale per row; returns how many.

    ``Gather(table, ids)`` becomes ``Cast(Gather(int8 table, ids)) * Gather(scales, ids)``: exact up to half a
    step of each row's own scale, where one scale for the whole table cost up to 0.014 in score.
    """
    from onnx import TensorProto, helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    rewritten = 0
    nodes = list(model.graph.node)
    for node in nodes:
        table = initializers.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or int(np.prod(table.dims)) < min_elements:
            continue
        weights = numpy_helper.to_array(table).astype(np.float32)
        scales = np.abs(weights).max(axis=1, keepdims=True) / 127.0
        scales[scales == 0] = 1.0
        quantized = np.clip(np.round(weights / scales), -127, 127).astype(np.int8)
        base = table.name
        model.graph.initializer.remove(table)
        model.graph.initializer.extend(
            [numpy_helper.from_array(quantized, f"{base}_int8"), numpy_helper.from_array(scales, f"{base}_scale")]
        )
        ids, out = node.input[1], node.output[0]
        replacement = [
            helper.make_node("Gather", [f"{base}_int8", ids], [f"{out}_int8"], name=f"{node.name}_int8"),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], to=TensorProto.FLOAT, name=f"{node.name}_cast"),
            helper.make_node("Gather", [f"{base}_scale", ids], [f"{out}_scale"], name=f"{node.name}_scale"),
            helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node.name}_dequant"),
        ]
        position = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for offset, new in enumerate(replacement):
            model.graph.node.insert(position + offset, new)
        rewritten += 1
    return rewritten


def quantize_weights(
    fp32: Path,
    out: Path,
    *,
    accuracy_level: int | None = ACCURACY_LEVEL,
    embedding_min_elements: int = EMBEDDING_MIN_ELEMENTS,
) -> int:
    """MatMul weights to 8 bits per block of 32 (fp32 activations), then large embedding tables per row."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet_exporters():
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(fp32)), bits=8,
            block_size=BLOCK_SIZE,
            is_symmetric=True,
            accuracy_level=accuracy_level,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
    model = quantizer.model.model
    quantize_embeddings(model, embedding_min_elements)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return max(int(op.version) for op in model.opset_import if op.domain in ("", "ai.onnx"))


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """The Rust tokenizer as ``tokenizer.json``: padding to the longest in a batch, truncation set at load."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ClassifierError(f"{type(tokenizer).__name__} has no fast (Rust) tokenizer to export")
    rust = Tokenizer.from_str(backend.to_str())
    rust.no_truncation()
    rust.enable_padding(pad_id=int(tokenizer.pad_token_id or 0), pad_token=str(tokenizer.pad_token or "[PAD]"))
    rust.save(str(out))


def export_onnx(checkpoint: str | Path, out_dir: Path | None = None) -> Path:
    """Export ``checkpoint`` (``builtin`` or a directory) to ``model.int8.onnx`` + ``tokenizer.json``.

    Both go into ``out_dir`` (default: the checkpoint directory itself), and the checkpoint's metadata gains
    an ``onnx`` section (file, hash, how it was quantised) that the ONNX runtime reads. Returns the graph's path.
    """
    source = checkpoint_dir(str(checkpoint))
    target = out_dir or source
    target.mkdir(parents=True, exist_ok=True)
    model, tokenizer, meta = load_checkpoint(BUILTIN if str(checkpoint) == BUILTIN else str(source))
    graph = target / ONNX_FILE
    with tempfile.TemporaryDirectory(prefix="tiergate-onnx-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        export_fp32(model, tokenizer, fp32)
        opset = quantize_weights(fp32, graph)
    save_tokenizer(tokenizer, target / TOKENIZER_FILE)
    import onnxruntime

    section = {
        "file": ONNX_FILE,
        "tokenizer": TOKENIZER_FILE,
        "sha256": _sha256(graph),
        "quantize": f"MatMul weights int8 per block of {BLOCK_SIZE} (MatMulNBits), word embeddings int8 per row",
        "opset": opset,
        "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    previous = read_metadata(target) or meta
    # A threshold calibrated on this export's scores (the shipped default's) outlives a re-export: same graph.
    kept = {k: v for k, v in previous.get("onnx", {}).items() if k in ("threshold", "threshold_source")}
    write_metadata(target, {**previous, "onnx": {**section, **kept}})
    return graph


def main(argv: list[str] | None = None) -> int:
    """``python -m routers.training.onnx_export [CHECKPOINT]``: export ``builtin`` or a checkpoint in place."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    print(export_onnx(args[0] if args else BUILTIN))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
