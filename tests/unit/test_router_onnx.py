"""The ONNX router: export round trip on a tiny encoder, runtime choice, and parity with torch on the default."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from routers.artifacts import ONNX_DATA_FILE, ONNX_FILE, TOKENIZER_FILE, builtin_dir, read_metadata
from routers.classifier import EncoderScorer
from routers.errors import ClassifierError
from routers.onnx_classifier import OnnxScorer
from routers.registry import build_router
from routers.runtime import choose_runtime, load_scorer
from routers.training.onnx_export import export_onnx
from tests.conftest import SHARED_DATA
from tests.support.tiny_encoder import build_tiny_encoder

# Written for these tests, apart from the training anchors: short, long (past the 128-token cap), code,
# non-ASCII, punctuation-only, and ordinary questions.
PROMPTS = [
    "hey",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Summarise the causes of the First World War in three bullet points.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n# why is this slow and how do I fix it?",
    "Design a multi-region active-active database architecture with conflict resolution for a payments system, "
    "covering consistency models, failover, and how to test partitions. " * 6,
    "Explain the difference between a Banach space and a Hilbert space with an example of each.",
    "Ça va ? Können Sie mir helfen, eine E-Mail auf Japanisch zu schreiben? 日本語でお願いします。",
    "???",
    "Given the matrix [[2, 1], [1, 3]], find its eigenvalues and eigenvectors, then diagonalise it.",
    "translate 'good morning' to Spanish",
    "A contract says delivery 'within a reasonable time'. Under UCC Article 2, what factors does a court weigh?",
    "Prove that the sum of the reciprocals of the primes diverges.",
    "list three fruits",
    "I feel a bit tired today, any tips?",
    "Implement a lock-free multi-producer multi-consumer queue in C++ and argue why it is linearizable.",
]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return build_tiny_encoder(tmp_path / "tiny")


def test_export_round_trip_scores_like_torch(tiny: Path) -> None:
    graph = export_onnx(str(tiny))
    assert graph == tiny / ONNX_FILE and (tiny / TOKENIZER_FILE).is_file()
    meta = read_metadata(tiny)
    assert meta["onnx"]["file"] == ONNX_FILE and len(meta["onnx"]["sha256"]) == 64
    texts = ["hello", "prove that the theorem holds for every prime number " * 40, "what is law", "why"]
    expected = EncoderScorer.load(str(tiny), max_length=12, quantize=False).score_batch(texts)
    onnx = OnnxScorer.load(str(tiny), max_length=12, threads=1)
    got = onnx.score_batch(texts)
    assert got == pytest.approx(expected, abs=0.01)
    assert onnx.score_batch(texts[::-1]) == pytest.approx(got[::-1], abs=1e-5)  # padding does not leak
    assert onnx.score_batch([]) == []


def _session_graph(graph: Path) -> Any:
    """The graph ONNX Runtime actually runs (after its own fusions and constant folding at load)."""
    import onnx
    import onnxruntime

    from routers.onnx_classifier import session_options

    optimized = graph.parent / "optimized.onnx"
    options = session_options(1)
    options.optimized_model_filepath = str(optimized)
    onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(optimized))
    optimized.unlink()
    return model


def _weight_sources(model: Any, op_type: str) -> list[str | None]:
    """For each ``op_type`` node, the initializer its weight (input 1) comes from through a ``Cast``, if any."""
    casts = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Cast"}
    return [casts.get(node.input[1]) for node in model.graph.node if node.op_type == op_type]


def test_export_fuses_attention_unfuses_skip_layer_norm_and_keeps_8_bit_weights_beside_the_graph(tiny: Path) -> None:
    import onnx

    graph = export_onnx(str(tiny))
    meta = read_metadata(tiny)["onnx"]
    assert meta["weights"] == "int8" and meta["fused"]["Attention"] == 2 and meta["fused"]["BiasGelu"] == 2
    model = onnx.load(str(graph), load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    # The slow SkipLayerNormalization kernel is replaced by Add + LayerNormalization.
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") >= 4
    # Output projection and both FFN: 8-bit with int8 compute; Q, K and V: one packed fp16 weight, fp32 compute.
    assert "MatMul" not in ops and ops.count("MatMulNBits") == 6
    levels = {a.i for node in model.graph.node if node.op_type == "MatMulNBits" for a in node.attribute
              if a.name == "accuracy_level"}
    assert levels == {4}
    half = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    assert all(source in half for source in _weight_sources(model, "Attention"))
    assert not {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention"} & set(ops)  # nothing per tensor
    stored = {t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert any("word_embeddings" in name for name in stored)
    assert graph.stat().st_size < (tiny / ONNX_DATA_FILE).stat().st_size
    # What the session runs: Casts folded (no fp16 left), the LayerNorms not fused back into the slow kernel.
    session = _session_graph(graph)
    session_ops = [node.op_type for node in session.graph.node]
    assert "SkipLayerNormalization" not in session_ops and session_ops.count("Attention") == 2
    assert not [t.name for t in session.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]


def test_the_fp16_recipe_computes_every_weight_in_fp32(tiny: Path) -> None:
    import onnx

    graph = export_onnx(str(tiny), weights="fp16")
    assert read_metadata(tiny)["onnx"]["weights"] == "fp16"
    model = onnx.load(str(graph), load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    assert not {"MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger", "SkipLayerNormalization"} & set(ops)
    half = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    sources = _weight_sources(model, "MatMul") + _weight_sources(model, "Attention")
    assert len(sources) == 8 and all(source in half for source in sources)  # 3 MatMuls + Attention, 2 layers
    session = _session_graph(graph)
    assert not [t.name for t in session.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    texts = ["why", "prove that the theorem holds for every prime number " * 4]
    expected = EncoderScorer.load(str(tiny), max_length=12, quantize=False).score_batch(texts)
    assert OnnxScorer.load(str(tiny), max_length=12, threads=1).score_batch(texts) == pytest.approx(expected, abs=1e-3)


def test_a_re_export_replaces_the_weights_file_instead_of_growing_it(tiny: Path) -> None:
    export_onnx(str(tiny))
    first = (tiny / ONNX_DATA_FILE).read_bytes()
    export_onnx(str(tiny))
    assert (tiny / ONNX_DATA_FILE).read_bytes() == first
    assert read_metadata(tiny)["onnx"]["data_sha256"] == hashlib.sha256(first).hexdigest()


def test_a_missing_weights_file_is_a_clear_error(tiny: Path) -> None:
    export_onnx(str(tiny))
    (tiny / ONNX_DATA_FILE).unlink()
    with pytest.raises(ClassifierError, match="cannot load the ONNX router"):
        OnnxScorer.load(str(tiny))


def test_export_into_another_directory_leaves_the_checkpoint_alone(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    export_onnx(str(tiny), out)
    assert not (tiny / ONNX_FILE).exists() and (out / ONNX_FILE).is_file() and (out / ONNX_DATA_FILE).is_file()


def test_auto_runtime_falls_back_to_torch_with_a_log_line(tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tiergate.router"):
        assert choose_runtime(str(tiny)) == "torch"
    assert "no ONNX export" in caplog.text
    assert isinstance(load_scorer(str(tiny), max_length=12), EncoderScorer)
    export_onnx(str(tiny))
    assert choose_runtime(str(tiny)) == "onnx"
    assert isinstance(load_scorer(str(tiny), max_length=12), OnnxScorer)
    assert isinstance(load_scorer(str(tiny), runtime="torch", max_length=12), EncoderScorer)


def test_onnx_runtime_without_an_export_is_a_clear_error(tiny: Path) -> None:
    with pytest.raises(ClassifierError, match="no ONNX export"):
        OnnxScorer.load(str(tiny))


def test_a_corrupt_graph_is_a_clear_error(tiny: Path) -> None:
    export_onnx(str(tiny))
    (tiny / ONNX_FILE).write_bytes(b"not a graph")
    with pytest.raises(ClassifierError, match="cannot load the ONNX router"):
        OnnxScorer.load(str(tiny))


async def test_batching_router_serves_the_onnx_scorer(tiny: Path) -> None:
    export_onnx(str(tiny))
    router = build_router("classifier", path=str(tiny), max_length=12, threads=1, runtime="onnx")
    await router.start()
    try:
        score = await router.score("prove that the theorem holds")
    finally:
        await router.aclose()
    direct = OnnxScorer.load(str(tiny), max_length=12, threads=1).score_batch(["prove that the theorem holds"])
    assert score == pytest.approx(direct[0], abs=1e-6)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="runtime"):
        build_router("classifier", runtime="tensorflow")


def test_shipped_default_ships_its_onnx_export() -> None:
    assert (builtin_dir() / ONNX_FILE).is_file() and (builtin_dir() / TOKENIZER_FILE).is_file()
    assert (builtin_dir() / ONNX_DATA_FILE).stat().st_size < 25_000_000
    assert choose_runtime("builtin") == "onnx"


def _parity(texts: list[str]) -> tuple[float, float]:
    onnx = np.asarray(OnnxScorer.load("builtin", max_length=0).score_batch(texts))
    torch_fp32 = np.asarray(EncoderScorer.load("builtin", max_length=0, quantize=False).score_batch(texts))
    return float(np.abs(onnx - torch_fp32).max()), float(np.abs(onnx - torch_fp32).mean())


@pytest.mark.slow
def test_default_onnx_scores_match_torch_on_builtin_prompts() -> None:
    worst, _ = _parity(PROMPTS)
    assert worst < 0.01


@pytest.mark.slow
@pytest.mark.data
def test_default_onnx_scores_match_torch_on_a_shared_data_sample() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared routing data not found at {SHARED_DATA}")
    from routers.training.data import load_data, select

    examples = load_data(SHARED_DATA)
    sample = [e.text for split in ("val-random", "val-subject", "val-arena") for e in select(examples, split, 0)[:60]]
    worst, mean = _parity(sample)
    assert worst < 0.01 and mean < 0.003


def test_a_copied_default_without_its_export_runs_on_torch(tmp_path: Path) -> None:
    copy = tmp_path / "default"
    shutil.copytree(builtin_dir(), copy, ignore=shutil.ignore_patterns(ONNX_FILE))
    assert choose_runtime(str(copy)) == "torch"


def test_an_export_threshold_wins_and_survives_a_re_export(tiny: Path) -> None:
    from routers.artifacts import write_metadata

    export_onnx(str(tiny))
    meta = read_metadata(tiny)
    write_metadata(tiny, {**meta, "threshold": 0.4, "onnx": {**meta["onnx"], "threshold": 0.7}})
    assert OnnxScorer.load(str(tiny)).recommended_threshold == 0.7
    assert EncoderScorer.load(str(tiny)).recommended_threshold == 0.4
    export_onnx(str(tiny))
    assert read_metadata(tiny)["onnx"]["threshold"] == 0.7
