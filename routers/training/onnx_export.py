"""Export a router checkpoint to one ONNX graph (encoder, pooling, head, probability) with 8-bit weights.

The recipe, each step chosen by measurement (bench/RESULTS.md and bench/onnx_variants.py, issue 17):

1. TorchScript export with eager attention: its pattern is the one ONNX Runtime's transformer optimizer knows.
2. That optimizer fuses bias with GELU (``BiasGelu``) and the attention (``Attention``: one GEMM over a packed
   Q, K and V weight, then the attention core), in fp32, before quantisation (quantised MatMuls no longer
   match its patterns). Its ``SkipLayerNormalization`` is unfused again (``unfuse_skip_layer_norm``): that
   CPU kernel took 4x as long as ``Add`` + ``LayerNormalization`` here.
3. ``weights="int8"`` (the default): the output projection and both FFN MatMuls go 8-bit per block of 32
   (``MatMulNBits``) computed in int8 (``accuracy_level`` 4: activations rounded per block of 32 values of
   each token); the packed QKV weight is stored in fp16 and computed in fp32. ``weights="fp16"``: every
   encoder weight is stored in fp16 and computed in fp32, about 15% faster again but 13 MB more resident.
   int8 with activations rounded per tensor (ONNX Runtime's dynamic quantisation, fast on AMX) is not used:
   rounding the weights to int8 per channel alone moves scores by 0.0075 on dev prompts, and per-tensor
   activations (even with the [CLS] row, which holds the outliers, kept apart) by 0.01 to 0.1.
4. Word embeddings go 8-bit per row. Weights are stored beside the graph (``model.int8.onnx.data``), which
   ONNX Runtime memory-maps: the embedding rows a deployment never sees are never read into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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
# int8 compute over per-block int8 activations: 1.3x to 1.5x faster than the same weights computed in fp32.
ACCURACY_LEVEL: int | None = 4
Weights = Literal["int8", "fp16"]
# How the encoder's weights are stored and computed (module docstring, step 3).
WEIGHTS: Weights = "int8"
# Weights of these ops at least this large are stored in fp16 (``half_weights``); the head's Gemms stay fp32.
HALF_OPS = ("MatMul", "Attention")
HALF_MIN_ELEMENTS = 256
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


def fuse(
    fp32: Path, out: Path, num_heads: int, hidden_size: int, attention: str = "Attention"
) -> dict[str, int]:
    """ONNX Runtime's BERT fusions on the fp32 graph (see the module docstring); returns the fused op counts.

    Embedding + LayerNorm stays unfused so the word embeddings remain a plain ``Gather`` that goes 8-bit.
    Only the graph is rewritten (``opt_level=0``): the session applies its own optimisations at load.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    # Attention (one packed QKV GEMM) measured faster than MultiHeadAttention (three) here; bench/onnx_variants.py.
    options.use_multi_head_attention = attention == "MultiHeadAttention"
    with _quiet_exporters():
        optimized = optimize_model(
            str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
            optimization_options=options, opt_level=0,
        )
    onnx.save(optimized.model, str(out))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def unfuse_skip_layer_norm(model: Any) -> int:
    """Rewrite each ``SkipLayerNormalization(x, skip, gamma, beta, bias)`` as ``LayerNorm(x + bias + skip)``.

    ONNX Runtime 1.32's CPU ``SkipLayerNormalization`` took 120 us on 128 x 384 values here, two ``Add`` and a
    ``LayerNormalization`` 30 us (bench/RESULTS.md); the session does not fuse them back. Returns how many.
    """
    from onnx import helper

    rewritten = 0
    for node in [n for n in model.graph.node if n.op_type == "SkipLayerNormalization"]:
        x, skip, gamma, beta = node.input[:4]
        bias = node.input[4] if len(node.input) > 4 else ""
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        replacement = []
        if bias:
            replacement.append(helper.make_node("Add", [x, bias], [f"{node.name}_biased"], name=f"{node.name}_bias"))
            x = f"{node.name}_biased"
        replacement += [
            helper.make_node("Add", [x, skip], [f"{node.name}_sum"], name=f"{node.name}_skip"),
            helper.make_node(
                "LayerNormalization", [f"{node.name}_sum", gamma, beta], [node.output[0]],
                name=f"{node.name}_norm", axis=-1, epsilon=epsilon,
            ),
        ]
        _replace(model, node, replacement)
        rewritten += 1
    return rewritten


def _replace(model: Any, node: Any, replacement: list[Any]) -> None:
    """Put ``replacement`` where ``node`` was (the graph stays topologically sorted)."""
    position = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    for offset, new in enumerate(replacement):
        model.graph.node.insert(position + offset, new)


def half_weights(model: Any, op_types: tuple[str, ...] = HALF_OPS, min_elements: int = HALF_MIN_ELEMENTS) -> int:
    """Store the large fp32 weights of ``op_types`` as fp16 behind a ``Cast``; returns how many.

    The session folds each ``Cast`` of a constant at load, so compute stays fp32 and scores move by about
    1e-4 (fp16 keeps 11 significant bits); the file holds half the bytes. Activations are never rounded.
    """
    from onnx import TensorProto, helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    converted: set[str] = set()
    for node in [n for n in model.graph.node if n.op_type in op_types]:
        for slot, name in enumerate(node.input):
            table = initializers.get(name)
            if name in converted:  # a weight shared with a node already rewritten
                node.input[slot] = f"{name}_fp32"
                continue
            if table is None or table.data_type != TensorProto.FLOAT or int(np.prod(table.dims)) < min_elements:
                continue
            half = numpy_helper.to_array(table).astype(np.float16)
            model.graph.initializer.remove(table)
            model.graph.initializer.append(numpy_helper.from_array(half, f"{name}_fp16"))
            cast = helper.make_node("Cast", [f"{name}_fp16"], [f"{name}_fp32"], name=f"{name}_cast",
                                    to=TensorProto.FLOAT)
            model.graph.node.insert(list(model.graph.node).index(node), cast)
            node.input[slot] = f"{name}_fp32"
            converted.add(name)
    return len(converted)


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
    for node in list(model.graph.node):
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
        _replace(model, node, replacement)
        rewritten += 1
    return rewritten


def quantize_weights(
    fused: Path,
    out: Path,
    *,
    weights: Weights = WEIGHTS,
    accuracy_level: int | None = ACCURACY_LEVEL,
    embedding_min_elements: int = EMBEDDING_MIN_ELEMENTS,
) -> int:
    """The fused graph's last steps (module docstring): LayerNorms unfused, weights stored, embeddings 8-bit."""
    import onnx

    model = onnx.load(str(fused))
    unfuse_skip_layer_norm(model)
    if weights == "int8":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        with _quiet_exporters():
            quantizer = MatMulNBitsQuantizer(
                model, bits=8,
                block_size=BLOCK_SIZE,
                is_symmetric=True,
                accuracy_level=accuracy_level,
                op_types_to_quantize=("MatMul",),
            )
            quantizer.process()
        model = quantizer.model.model
    if not any(op.domain == "com.microsoft" for op in model.opset_import):  # the fused ops' domain
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    half_weights(model)  # with int8 MatMuls, only the attention's packed QKV weight is left in fp32
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


def describe(weights: Weights) -> str:
    """The metadata's one-line account of how the export stores and computes its weights."""
    if weights == "int8":
        return (
            f"MatMul weights int8 per block of {BLOCK_SIZE} (MatMulNBits, accuracy_level {ACCURACY_LEVEL}: "
            "int8 compute over activations rounded per block), attention QKV weights fp16 computed in fp32, "
            "embeddings int8 per row"
        )
    return "encoder weights fp16 computed in fp32 (activations never rounded), embeddings int8 per row"


def export_onnx(checkpoint: str | Path, out_dir: Path | None = None, *, weights: Weights = WEIGHTS) -> Path:
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
        opset = quantize_weights(fused, graph, weights=weights)
    save_tokenizer(tokenizer, target / TOKENIZER_FILE)
    import onnxruntime

    section = {
        "file": ONNX_FILE,
        "tokenizer": TOKENIZER_FILE,
        "sha256": _sha256(graph),
        "data": ONNX_DATA_FILE,
        "data_sha256": _sha256(target / ONNX_DATA_FILE) if (target / ONNX_DATA_FILE).exists() else None,
        # What ONNX Runtime's optimizer fused; quantize_weights then unfuses its SkipLayerNormalization again.
        "fused": {op: n for op, n in fusions.items() if op != "SkipLayerNormalization"},
        "unfused": {op: n for op, n in fusions.items() if op == "SkipLayerNormalization"},
        "weights": weights,
        "quantize": describe(weights),
        "opset": opset,
        "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    previous = read_metadata(target) or meta
    # A threshold calibrated on this export's scores (the shipped default's) outlives a re-export: same graph.
    kept = {k: v for k, v in previous.get("onnx", {}).items() if k in ("threshold", "threshold_source")}
    write_metadata(target, {**previous, "onnx": {**section, **kept}})
    return graph


def main(argv: list[str] | None = None) -> int:
    """``python -m routers.training.onnx_export [CHECKPOINT] [--weights fp16|int8] [--out DIR]``: export in place."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m routers.training.onnx_export", description=main.__doc__)
    parser.add_argument("checkpoint", nargs="?", default=BUILTIN)
    parser.add_argument("--weights", choices=("fp16", "int8"), default=WEIGHTS)
    parser.add_argument("--out", type=Path, default=None, help="write the export here (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    print(export_onnx(args.checkpoint, args.out, weights=args.weights))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
