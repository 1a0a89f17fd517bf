"""Held-out parity of the router's runtimes: torch fp32, torch int8 (what ``runtime: torch`` serves) and ONNX.

Prints APGR / CPT per split and runtime, and how far each runtime's scores are from the fp32 model's.

    flock /tmp/tiergate-bench.lock .venv/bin/python bench/router_parity.py --data ../shared/data/routing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from routers.base import Scorer
from routers.classifier import EncoderScorer
from routers.onnx_classifier import OnnxScorer
from routers.training.evaluate import curve, summary
from routers.training.report import HELD_OUT, datasets, score_sorted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/routing")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--splits", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    scorers: dict[str, Scorer] = {
        "torch fp32": EncoderScorer.load(args.model, max_length=0, quantize=False),
        "torch int8": EncoderScorer.load(args.model, max_length=0, quantize=True),
        "onnx": OnnxScorer.load(args.model, max_length=0),
    }
    results: dict[str, Any] = {}
    print("| split (n) | " + " | ".join(scorers) + " | onnx vs fp32 max / mean | int8 vs fp32 max / mean / bias |")
    print("| --- |" + " --- |" * (len(scorers) + 2))
    for name, examples in datasets(args.data, "auto").items():
        if name not in args.splits or not examples:
            continue
        texts, small, large = [e.text for e in examples], [e.small for e in examples], [e.large for e in examples]
        scores = {k: np.asarray(score_sorted(s, texts, False)) for k, s in scorers.items()}
        fp32 = scores["torch fp32"]
        onnx_diff, int8_diff = scores["onnx"] - fp32, scores["torch int8"] - fp32
        row = {k: summary(curve(k, v, small, large)) for k, v in scores.items()}
        results[name] = {"n": len(examples), **row, "onnx_max_diff": float(np.abs(onnx_diff).max())}
        cells = [f"{r['apgr']:.4f} / {r['cpt50']:.1%} / {r['cpt80']:.1%}" for r in row.values()]
        print(
            f"| {name} ({len(examples)}) | " + " | ".join(cells)
            + f" | {np.abs(onnx_diff).max():.4f} / {np.abs(onnx_diff).mean():.4f}"
            + f" | {np.abs(int8_diff).max():.3f} / {np.abs(int8_diff).mean():.3f} / {int8_diff.mean():+.3f} |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
