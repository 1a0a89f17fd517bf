"""``tiergate evaluate``: score held-out data with a checkpoint, compare with baselines, print and plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routers.base import Scorer
from routers.runtime import RuntimeChoice, load_scorer
from routers.training.calibrate import score_texts
from routers.training.data import SPLITS, Example, SplitName, load_data, select
from routers.training.evaluate import Curve, curve, oracle_curve, plot, random_curve, summary, table

DATASET_SPLITS: dict[str, str] = {
    "val-random": "MMLU, random held-out rows",
    "val-subject": "MMLU, unseen subjects",
    "val-arena": "Arena, held-out prompts",
}
HELD_OUT: tuple[SplitName, ...] = ("val-random", "val-subject", "val-arena")


def datasets(path: str | Path, split: str, seed: int = 0) -> dict[str, list[Example]]:
    """The named evaluation sets: the shared directory's held-out splits, or one split of a file."""
    examples = load_data(path)
    if split == "auto":
        if Path(path).is_dir():
            return {name: select(examples, name, seed) for name in HELD_OUT}
        split = "all"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose auto or one of {', '.join(SPLITS)}")
    name = next(s for s in SPLITS if s == split)
    return {name: select(examples, name, seed)}


def length_curve(examples: Sequence[Example]) -> Curve:
    """Baseline: longer prompts go large first."""
    return curve(
        "length",
        [float(len(e.text)) for e in examples],
        [e.small for e in examples],
        [e.large for e in examples],
    )


def score_sorted(scorer: Scorer, texts: Sequence[str], progress: bool) -> list[float]:
    """Scores in input order, computed in length order so batches carry little padding."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    scored = score_texts(scorer, [texts[i] for i in order], progress=progress)
    scores = [0.0] * len(texts)
    for i, s in zip(order, scored, strict=True):
        scores[i] = s
    return scores


def evaluate_command(
    data: str | Path,
    model: str,
    split: str,
    max_length: int | None,
    threads: int,
    plot_path: Path | None,
    json_path: Path | None,
    progress: bool = True,
    runtime: RuntimeChoice = "auto",
) -> int:
    """Print one table per dataset (router, random, length, oracle) and write the plot and JSON."""
    scorer = load_scorer(model, runtime=runtime, max_length=max_length or 0, threads=threads)
    groups: dict[str, list[Curve]] = {}
    results: dict[str, Any] = {}
    for name, examples in datasets(data, split).items():
        if not examples:
            continue
        small, large = [e.small for e in examples], [e.large for e in examples]
        scores = score_sorted(scorer, [e.text for e in examples], progress)
        curves = [
            curve("router", scores, small, large),
            random_curve(small, large),
            length_curve(examples),
            oracle_curve(small, large),
        ]
        title = f"{DATASET_SPLITS.get(name, name)} (n={len(examples)})"
        print(table(curves, title) + "\n")
        groups[title] = curves
        results[name] = {"n": len(examples), **{c.name: summary(c) for c in curves}}
    if plot_path is not None and groups:
        plot(groups, plot_path)
        print(f"plot: {plot_path}")
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0
