"""Checkpoint files that serving reads without torch: where the default lives, metadata, the ONNX export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUILTIN = "builtin"
METADATA_FILE = "metadata.json"
ONNX_FILE = "model.int8.onnx"
# The graph's large weights, beside it: ONNX Runtime maps this file instead of copying it (about 11 MiB less RSS).
ONNX_DATA_FILE = "model.int8.onnx.data"
TOKENIZER_FILE = "tokenizer.json"


def builtin_dir() -> Path:
    """Where the shipped default router lives (inside the ``routers`` package)."""
    return Path(__file__).resolve().parent / "default"


def checkpoint_dir(path: str) -> Path:
    """The directory of ``builtin`` or of a checkpoint path."""
    return builtin_dir() if path == BUILTIN else Path(path)


def read_metadata(directory: Path) -> dict[str, Any]:
    """``metadata.json`` of a checkpoint, or ``{}`` for a plain transformers directory."""
    file = directory / METADATA_FILE
    return dict(json.loads(file.read_text())) if file.exists() else {}


def write_metadata(out: Path, meta: dict[str, Any]) -> None:
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def onnx_export_of(directory: Path) -> tuple[Path, Path] | None:
    """The checkpoint's ONNX graph and ``tokenizer.json`` when both exist (written by ``export_onnx``).

    The graph names its weights file (``ONNX_DATA_FILE``) itself; a missing one fails at load, with the path.
    """
    model, tokenizer = directory / ONNX_FILE, directory / TOKENIZER_FILE
    return (model, tokenizer) if model.is_file() and tokenizer.is_file() else None
