"""Export a router checkpoint to one ONNX graph (encoder, pooling, head, probability) with 8-bit weights.

The recipe, each step chosen by measurement (bench/RESULTS.md, issue 17):

1. TorchScript export with eager attention: its pattern is the one ONNX Runtime's transformer optimizer knows.
2. That optimizer fuses LayerNorm with the residual add (``SkipLayerNormalization``), bias with GELU
   (``BiasGelu``) and the attention core (``MultiHeadAttention``, which leaves the Q, K and V projections as
   MatMuls so their weights go 8-bit too, unlike the packed fp32 weight of its ``Attention`` op). Done in
   fp32, before quantisation, because quantised MatMuls no longer match its patterns.
3. MatMul weights to 8 bits per block of 32 (``MatMulNBits``) computed in int8 (``accuracy_level`` 4): the
   activations are rounded per block of 32 values of each token, not per tensor. ONNX Runtime's dynamic
   int8 quantisation rounds each activation tensor with one scale, which moved the shipped default's scores
   by up to 0.1 on held-out prompts (0.05 even with SmoothQuant-style scales); its threshold sits where a
   0.01 shift moves about 4% of traffic. Word embeddings go 8-bit per row.
4. Weights are stored beside the graph (``model.int8.onnx.data``), which ONNX Runtime memory-maps: the
   embedding rows a deployment never sees are never read into memory.
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

from routers.artifacts import (
    BUILTIN,
    ONNX_DATA_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    checkpoint_dir,
    read_metadata,
    write_metadata,
)
from routers.checkpoint import load_checkpoint
from routers.errors import ClassifierError

OPSET = 17
BLOCK_SIZE = 32
# int8 compute over per-block int8 activations: 1.3x to 1.5x faster than fp32 compute at the same parity.
ACCURACY_LEVEL: int | None = 4
# Tensors at least this large go into ONNX_DATA_FILE (all MatMul weights and the embeddings).
EXTERNAL_MIN_BYTES = 1024
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


def _pretrained(model: nn.Module) -> Any:
    """The outermost transformers model inside ``model`` (the encoder of a pooled checkpoint), or None."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def _eager_attention(model: nn.Module) -> None:
    """Export the plain softmax(QK^T)V pattern, not SDPA's masked one, which the fusions below do not match."""
    encoder = _pretrained(model)
    setter = getattr(encoder, "set_attn_implementation", None)  # transformers' API, missing in older releases
    if setter is not None:
        with contextlib.suppress(ValueError, ImportError):  # a model without eager attention keeps its own
            setter("eager")


def encoder_shape(model: nn.Module) -> tuple[int, int]:
    """``(num_heads, hidden_size)`` of the checkpoint's encoder, for the attention fusion; (0, 0) if unknown."""
    # A transformers config (not ours): architectures name these fields differently or not at all.
    config = getattr(_pretrained(model), "config", None)
    return int(getattr(config, "num_attention_heads", 0) or 0), int(getattr(config, "hidden_size", 0) or 0)


def fuse(fp32: Path, out: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's BERT fusions on the fp32 graph (see the module docstring); returns the fused op counts.

    Embedding + LayerNorm stays unfused so the word embeddings remain a plain ``Gather`` that goes 8-bit.
    Only the graph is rewritten (``opt_level=0``): the session applies its own optimisations at load.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    options.use_multi_head_attention = True
    with _quiet_exporters():
        optimized = optimize_model(
            str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
            optimization_options=options, opt_level=0,
        )
    onnx.save(optimized.model, str(out))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def export_fp32(model: nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """The whole scoring graph in fp32 with dynamic batch and sequence axes."""
    sample = tokenizer(["hello", "prove that there are infinitely many primes"], padding=True, return_tensors="pt")
    graph = ScoreGraph(model)
    graph.train(False)
    _eager_attention(model)
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
    save_with_weights_beside(model, out)
    return max(int(op.version) for op in model.opset_import if op.domain in ("", "ai.onnx"))


def save_with_weights_beside(model: Any, out: Path) -> Path:
    """Write ``out`` and its weights file ``ONNX_DATA_FILE`` (replaced, never appended to); returns the latter."""
    import onnx

    data = out.parent / ONNX_DATA_FILE
    data.unlink(missing_ok=True)  # onnx appends to an existing weights file
    onnx.save(
        model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
        location=ONNX_DATA_FILE, size_threshold=EXTERNAL_MIN_BYTES, convert_attribute=False,
    )
    if data.exists():
        data.chmod(0o644)  # onnx creates it private; it ships like the graph
    return data


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """The Rust tokenizer as ``tokenizer.json``: padding to the longest in a batch, truncation set at load."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)  # only transformers' fast tokenizers have one
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
        fp32, fused = Path(tmp) / "model.fp32.onnx", Path(tmp) / "model.fused.onnx"
        export_fp32(model, tokenizer, fp32)
        fusions = fuse(fp32, fused, *encoder_shape(model))
        opset = quantize_weights(fused, graph)
    save_tokenizer(tokenizer, target / TOKENIZER_FILE)
    import onnxruntime

    section = {
        "file": ONNX_FILE,
        "tokenizer": TOKENIZER_FILE,
        "sha256": _sha256(graph),
        "data": ONNX_DATA_FILE,
        "data_sha256": _sha256(target / ONNX_DATA_FILE) if (target / ONNX_DATA_FILE).exists() else None,
        "fused": fusions,
        "quantize": (
            f"MatMul weights int8 per block of {BLOCK_SIZE} (MatMulNBits, accuracy_level {ACCURACY_LEVEL}: "
            "int8 compute over activations rounded per block), embeddings int8 per row"
        ),
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
