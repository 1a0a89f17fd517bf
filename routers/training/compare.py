"""``tiergate evaluate --against``: two routers on the same held-out rows, with length and random baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from routers.checkpoint import BUILTIN, checkpoint_dir, read_metadata
from routers.classifier import EncoderScorer
from routers.training.data import data_hash
from routers.training.evaluate import Curve, curve, oracle_curve, plot, random_curve, summary, table
from routers.training.report import DATASET_SPLITS, datasets, length_curve, score_sorted


def router_label(path: str) -> str:
    """A short name for a checkpoint in tables and plots: ``builtin`` or the directory name."""
    return BUILTIN if path == BUILTIN else Path(path).name or str(path)


def adapted_on(model: str, data: str | Path) -> bool:
    """Whether ``model`` was adapted on exactly this data file (then the comparison is not held out)."""
    if Path(data).is_dir():
        return False
    sources = read_metadata(checkpoint_dir(model)).get("adaptation", {}).get("data", [])
    digest = data_hash(data)
    return any(source.get("sha256") == digest for source in sources)


def compare_command(
    data: str | Path,
    model: str,
    against: str,
    split: str,
    threads: int,
    plot_path: Path | None,
    json_path: Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every dataset with both routers; print a table per dataset; write one plot and the JSON."""
    if adapted_on(model, data):
        print(f"warning: {model} was adapted on {data}; these rows are not held out", file=sys.stderr)
    names = (router_label(model), router_label(against))
    if names[0] == names[1]:
        names = (f"{names[0]} (model)", f"{names[1]} (against)")
    scorers = [EncoderScorer.load(path, max_length=0, threads=threads) for path in (model, against)]
    groups: dict[str, list[Curve]] = {}
    results: dict[str, Any] = {"model": model, "against": against}
    for name, examples in datasets(data, split).items():
        if not examples:
            continue
        small, large = [e.small for e in examples], [e.large for e in examples]
        texts = [e.text for e in examples]
        curves = [
            curve(label, score_sorted(s, texts, progress), small, large)
            for label, s in zip(names, scorers, strict=True)
        ]
        curves += [length_curve(examples), random_curve(small, large), oracle_curve(small, large)]
        title = f"{DATASET_SPLITS.get(name, name)} (n={len(examples)})"
        print(table(curves, title))
        delta = curves[0].apgr - curves[1].apgr
        print(f"{names[0]} vs {names[1]}: APGR {delta:+.3f}\n")
        groups[title] = curves
        results[name] = {"n": len(examples), **{c.name: summary(c) for c in curves}, "apgr_gain": round(delta, 4)}
    if plot_path is not None and groups:
        plot(groups, plot_path)
        print(f"plot: {plot_path}")
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    return results
