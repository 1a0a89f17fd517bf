"""Issue 17's graph variants side by side: speed at 1 x 128 and 32 x 128 tokens, parity on the dev split.

Builds each variant of the shipped default's scoring graph from one fp32 export, then scores a sample of the
**dev** split (never the held-out splits: settings are picked here, reported there by bench/router_parity.py)
against the fp32 graph, and times every session interleaved (minimums are the figures to trust on a shared
machine). Needs the ``train`` extra (torch) for the export.

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/onnx_variants.py --data ../shared/data/routing
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routers.artifacts import BUILTIN
from routers.checkpoint import load_checkpoint
from routers.onnx_classifier import session_options
from routers.training.data import load_data, select
from routers.training.onnx_export import (
    encoder_shape,
    export_fp32,
    fuse,
    half_weights,
    quantize_embeddings,
    quantize_weights,
    save_with_weights_beside,
    unfuse_skip_layer_norm,
)

MAX_LENGTH = 128


def _matmuls(model: Any, kinds: Sequence[str]) -> list[Any]:
    """The encoder's MatMuls with a constant weight whose name holds one of ``kinds`` (query, intermediate, ...)."""
    weights = {init.name for init in model.graph.initializer}
    return [
        n for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in weights and "/encoder/" in n.name and any(k in n.name for k in kinds)
    ]


def dynamic_int8(model: Any, kinds: Sequence[str]) -> Any:
    """Those MatMuls as ``DynamicQuantizeMatMul``: int8 weights per output channel, activations per tensor."""
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    for node in _matmuls(model, kinds):
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        scale = np.abs(w).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        base = node.input[1]
        model.graph.initializer.extend([
            numpy_helper.from_array(np.clip(np.round(w / scale), -127, 127).astype(np.int8), f"{base}_q"),
            numpy_helper.from_array(scale.astype(np.float32), f"{base}_s"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_zp"),
        ])
        model.graph.initializer.remove(weights.pop(base))
        node.op_type, node.domain = "DynamicQuantizeMatMul", "com.microsoft"
        node.input[:] = [node.input[0], f"{base}_q", f"{base}_s", f"{base}_zp"]
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def weights_rounded(model: Any) -> Any:
    """Every encoder MatMul weight rounded to int8 per output channel but kept fp32: the rounding alone."""
    from onnx import numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    for node in _matmuls(model, ("/",)):
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        scale = np.abs(w).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        weights[node.input[1]].CopyFrom(numpy_helper.from_array(np.round(w / scale) * scale, node.input[1]))
    return model


def variants(mha: Path, attention: Path, out: Path) -> dict[str, Path]:
    """Each variant's graph file under ``out`` (weights beside it, embeddings 8-bit as shipped)."""
    import onnx

    built: dict[str, Path] = {}

    def save(name: str, model: Any) -> None:
        folder = out / name.replace(" ", "_").replace(",", "")
        folder.mkdir()
        if not any(op.domain == "com.microsoft" for op in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
        quantize_embeddings(model)
        save_with_weights_beside(model, folder / "model.onnx")
        built[name] = folder / "model.onnx"

    def finished(name: str, source: Path, weights: Any) -> None:
        folder = out / name.replace(" ", "_").replace(",", "")
        folder.mkdir()
        quantize_weights(source, folder / "model.onnx", weights=weights)
        built[name] = folder / "model.onnx"

    # The previous default: MultiHeadAttention, fused SkipLayerNorm, MatMulNBits 8-bit int8 compute.
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(mha)), bits=8, block_size=32, is_symmetric=True,
                                     accuracy_level=4, op_types_to_quantize=("MatMul",))
    quantizer.process()
    save("previous default (MHA, NBits int8)", quantizer.model.model)
    finished("recipe int8 (Attention, LN unfused, NBits)", attention, "int8")
    finished("recipe fp16 (Attention, LN unfused)", attention, "fp16")
    model = onnx.load(str(attention))
    half_weights(model)
    save("fp16, SkipLayerNorm kept", model)
    model = onnx.load(str(mha))
    unfuse_skip_layer_norm(model)
    half_weights(model)
    save("fp16, MHA", model)
    base = onnx.load(str(mha))
    unfuse_skip_layer_norm(base)
    save("int8 dynamic, every MatMul", dynamic_int8(copy.deepcopy(base), ("/",)))
    save("int8 dynamic, Q and K only", half_weights_after(dynamic_int8(copy.deepcopy(base), ("query", "key"))))
    save("int8 weights rounded, fp32 compute", weights_rounded(copy.deepcopy(base)))
    return built


def half_weights_after(model: Any) -> Any:
    half_weights(model)
    return model


def timed(run: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    import onnxruntime
    from tokenizers import Tokenizer

    from routers.artifacts import TOKENIZER_FILE, builtin_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/routing")
    parser.add_argument("--sample", type=int, default=600, help="dev prompts scored per variant")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    args = parser.parse_args()
    dev = [e.text for e in select(load_data(args.data), "dev", 0)]
    texts = sorted(random.Random(1).sample(dev, min(args.sample, len(dev))), key=len)
    tokenizer = Tokenizer.from_file(str(builtin_dir() / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def feed(batch: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch(list(batch))
        return {"input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64)}

    filler = "explain how the integral of a matrix valued function relates to the law of large numbers " * 12
    long_prompts = [f"{i} {filler}" for i in range(32)]
    with tempfile.TemporaryDirectory(prefix="tiergate-onnx-variants-") as tmp:
        folder = Path(tmp)
        model, tok, _ = load_checkpoint(BUILTIN)
        export_fp32(model, tok, folder / "fp32.onnx")
        fuse(folder / "fp32.onnx", folder / "mha.onnx", *encoder_shape(model), attention="MultiHeadAttention")
        fuse(folder / "fp32.onnx", folder / "attention.onnx", *encoder_shape(model))
        built = variants(folder / "mha.onnx", folder / "attention.onnx", folder)
        sessions = {
            name: onnxruntime.InferenceSession(str(path), session_options(2), providers=["CPUExecutionProvider"])
            for name, path in {"fp32 reference": folder / "mha.onnx", **built}.items()
        }

        def scores(session: Any) -> np.ndarray:
            return np.concatenate([session.run(None, feed(texts[i: i + 32]))[0] for i in range(0, len(texts), 32)])

        reference = scores(sessions["fp32 reference"])
        one, batch = feed(long_prompts[:1]), feed(long_prompts)
        assert one["input_ids"].shape[1] == MAX_LENGTH
        single: dict[str, float] = dict.fromkeys(sessions, float("inf"))
        batched: dict[str, float] = dict.fromkeys(sessions, float("inf"))
        for session in sessions.values():
            session.run(None, one)
        for _ in range(args.rounds):
            for name, session in sessions.items():
                single[name] = min(single[name], timed(lambda s=session: s.run(None, one), 40))
                batched[name] = min(batched[name], timed(lambda s=session: s.run(None, batch), 2))
        print(f"dev sample: {len(texts)} prompts; timing: {args.rounds} interleaved rounds, minimums")
        print("| variant | graph + weights MB | 1 x 128 min ms | 32 x 128 seq/s | dev max / mean abs diff vs fp32 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, session in sessions.items():
            path = built.get(name, folder / "mha.onnx")
            size = sum(p.stat().st_size for p in path.parent.iterdir()) if name in built else path.stat().st_size
            diff = np.abs(scores(session) - reference)
            print(f"| {name} | {size / 1e6:.1f} | {1000 * single[name]:.2f} | {32 / batched[name]:.0f} | "
                  f"{diff.max():.4f} / {diff.mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
