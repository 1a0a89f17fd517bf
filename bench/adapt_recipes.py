"""Adapter recipes compared on unseen MMLU subjects over several random halvings (how CANDIDATES was chosen).

Uses the encoded rows that bench/adapt_subjects.py caches; every recipe is fitted on all labels of a halving.

    flock /tmp/tiergate-bench.lock python bench/adapt_recipes.py --halvings 4
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from routers.training.adapt import Candidate, Encoded, apgr, fit_adapter
from routers.training.data import load_data, select

RECIPES = (
    Candidate(None),
    Candidate(3000.0),
    Candidate(None, 32, 1.0),
    Candidate(None, 128, 1.0),
    Candidate(3000.0, 32, 0.5),
    Candidate(10000.0, 128, 1.0),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/routing")
    parser.add_argument("--cache", default="/tmp/tiergate-adapt-subjects.npz", help="from bench/adapt_subjects.py")
    parser.add_argument("--halvings", type=int, default=4)
    args = parser.parse_args(argv)
    examples = load_data(args.data)
    unseen, val_random = select(examples, "val-subject"), select(examples, "val-random")
    rows = unseen + val_random
    saved = np.load(Path(args.cache))
    encoded = Encoded(rows, saved["pooled"], saved["prior"], saved["prior"])
    valr = encoded.take(list(range(len(unseen), len(rows))))
    results: dict[Candidate, list[tuple[float, float]]] = {}
    for halving in range(args.halvings):
        side = [int(hashlib.sha256(f"{halving}:{e.key}".encode()).hexdigest()[:8], 16) % 2 for e in unseen]
        train = encoded.take([i for i, s in enumerate(side) if s == 0])
        test = encoded.take([i for i, s in enumerate(side) if s == 1])
        for recipe in RECIPES:
            adapter = fit_adapter(train, recipe)
            results.setdefault(recipe, []).append((
                apgr(adapter.apply(test.prior, test.pooled, test.texts), test.examples),
                apgr(adapter.apply(valr.prior, valr.pooled, valr.texts), valr.examples),
            ))
    base = np.asarray([r[0] for r in results[RECIPES[0]]])
    print("| recipe | eval-half APGR (mean) | gain on each halving | val-random |\n|---|---:|---|---:|")
    for recipe, values in results.items():
        arr = np.asarray(values)
        gains = " ".join(f"{g:+.3f}" for g in arr[:, 0] - base)
        print(f"| {recipe.method} {recipe.ridge} k={recipe.knn_k} w={recipe.knn_weight} | {arr[:, 0].mean():.3f} "
              f"| {gains} | {arr[:, 1].mean():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
