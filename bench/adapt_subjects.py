"""Held-out-subject adaptation experiment (issue 18): the default vs the adapted router on unseen MMLU subjects.

The shipped default never trained on its ``val-subject`` split (whole MMLU subjects). Half of each such
subject's rows are the "user's labels", the other half the evaluation rows. The router is adapted with 100,
300 and all labels (one adaptation over all the held-out subjects' labels, subsampled by seed) and scored on
the evaluation half, per subject and overall, against the default, prompt length and random routing. The
default's own random validation split (``val-random``) checks forgetting.

    flock /tmp/tiergate-bench.lock python bench/adapt_subjects.py --data ../shared/data/routing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from routers.classifier import EncoderScorer
from routers.training.adapt import CANDIDATES, Candidate, Encoded, cross_validate, encode, fit_adapter
from routers.training.data import Example, load_data, select
from routers.training.evaluate import curve


def half(example: Example) -> bool:
    return int(hashlib.sha256(f"user-half:{example.key}".encode()).hexdigest()[:8], 16) % 2 == 0


def apgr(scores: Any, rows: list[Example]) -> float:
    return curve("x", scores, [e.small for e in rows], [e.large for e in rows]).apgr


def adapt_on(rows: Encoded, seed: int) -> tuple[Any, Candidate, float]:
    """What ``tiergate adapt`` does, minus encoding and writing: cross-fitting, the refusal check, refit on all."""
    ranking = cross_validate(rows, CANDIDATES, 5, seed)
    best = Candidate(ranking[0]["ridge"], ranking[0]["knn_k"], ranking[0]["knn_weight"])
    gain = apgr(ranking[0]["oof"], rows.examples) - apgr(rows.start, rows.examples)
    if gain < 0:  # adapt refuses: the deployment keeps the default
        best = Candidate(None)
    return fit_adapter(rows, best, seed), best, gain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/routing")
    parser.add_argument("--cache", default="/tmp/tiergate-adapt-subjects.npz", help="encoded rows (reused)")
    parser.add_argument("--budgets", default="100,300,all")
    parser.add_argument("--seeds", type=int, default=3, help="label subsamples per budget (all: one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--export", default=None, help="write labels.jsonl / eval.jsonl (the two halves) here, stop")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    examples = load_data(args.data)
    unseen = select(examples, "val-subject")
    val_random = select(examples, "val-random")
    rows = unseen + val_random
    if args.export:
        export(Path(args.export), unseen)
        return 0
    cache = Path(args.cache)
    if cache.exists():
        saved = np.load(cache)
        encoded = Encoded(rows, saved["pooled"], saved["prior"], saved["prior"])
    else:
        encoded = encode(EncoderScorer.load("builtin", max_length=0, threads=2), rows)
        np.savez(cache, pooled=encoded.pooled, prior=encoded.prior)
    n_unseen = len(unseen)
    labelled_idx = [i for i in range(n_unseen) if half(rows[i])]
    eval_idx = [i for i in range(n_unseen) if not half(rows[i])]
    vr_idx = list(range(n_unseen, len(rows)))
    evaluation, valr = encoded.take(eval_idx), encoded.take(vr_idx)
    subjects = sorted({e.group for e in evaluation.examples})
    by_subject = {s: [i for i, e in enumerate(evaluation.examples) if e.group == s] for s in subjects}
    results: dict[str, Any] = {"n_labelled": len(labelled_idx), "n_eval": len(eval_idx), "runs": []}
    lengths = np.asarray([float(len(e.text)) for e in evaluation.examples])

    def per_subject(scores: np.ndarray[Any, Any]) -> dict[str, float]:
        out = {s: apgr(scores[ix], [evaluation.examples[i] for i in ix]) for s, ix in by_subject.items()}
        out["mean"] = float(np.mean([out[s] for s in subjects]))
        out["pooled"] = apgr(scores, evaluation.examples)
        return out

    results["default"] = per_subject(evaluation.prior)
    results["length"] = per_subject(lengths)
    results["default_val_random"] = apgr(valr.prior, valr.examples)
    for budget in args.budgets.split(","):
        seeds = [0] if budget == "all" else list(range(args.seeds))
        for seed in seeds:
            pick = list(labelled_idx)
            if budget != "all":
                pick = sorted(np.random.default_rng(seed).choice(labelled_idx, int(budget), replace=False).tolist())
            t = time.perf_counter()
            adapter, best, gain = adapt_on(encoded.take(pick), seed)
            fit_s = time.perf_counter() - t
            scores = adapter.apply(evaluation.prior, evaluation.pooled, evaluation.texts)
            vr = apgr(adapter.apply(valr.prior, valr.pooled, valr.texts), valr.examples)
            run = {"budget": budget, "seed": seed, "labels": len(pick), "method": best.method, "recipe": best,
                   "holdout_gain": round(gain, 4), "fit_seconds": round(fit_s, 1), "apgr": per_subject(scores),
                   "val_random": vr}
            results["runs"].append(run)
            print(f"{budget:>4} seed {seed}: {best.method:<22} mean {run['apgr']['mean']:.4f} pooled "
                  f"{run['apgr']['pooled']:.4f} val-random {vr:.4f} (fit {fit_s:.1f} s)", file=sys.stderr)
    print(table(results, subjects))
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


def export(directory: Path, unseen: list[Example]) -> None:
    """The user's labels and the evaluation rows as ``tiergate adapt`` / ``evaluate`` JSONL."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("labels", [e for e in unseen if half(e)]), ("eval", [e for e in unseen if not half(e)])):
        lines = [json.dumps({"prompt": e.text, "small_score": e.small, "large_score": e.large, "group": e.group})
                 for e in rows]
        (directory / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"{directory / name}.jsonl: {len(rows)} rows", file=sys.stderr)


def table(results: dict[str, Any], subjects: list[str]) -> str:
    budgets = list(dict.fromkeys(r["budget"] for r in results["runs"]))

    def mean_of(budget: str, key: str) -> float:
        runs = [r for r in results["runs"] if r["budget"] == budget]
        return float(np.mean([r["apgr"][key] for r in runs]))

    head = "| subject (eval rows) | default | length | random | " + " | ".join(f"adapted {b}" for b in budgets) + " |"
    lines = [head, "|---|" + "---:|" * (3 + len(budgets))]
    for s in [*subjects, "mean", "pooled"]:
        cells = [f"{results['default'][s]:.3f}", f"{results['length'][s]:.3f}", "0.500"]
        cells += [f"{mean_of(b, s):.3f}" for b in budgets]
        label = f"**{s}**" if s in ("mean", "pooled") else s
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    vr = [f"{np.mean([r['val_random'] for r in results['runs'] if r['budget'] == b]):.3f}" for b in budgets]
    lines.append(f"| default's val-random | {results['default_val_random']:.3f} | | | " + " | ".join(vr) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
