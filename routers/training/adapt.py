"""``tiergate adapt``: fit a checkpoint's :class:`Adapter` to a deployment's labels, chosen by cross-validation.

Candidates (by measurement, see bench/RESULTS.md): the default's own score (no change), a residual ridge over
the frozen features plus request features, a nearest-neighbour memory of labelled prompts, and both. Every
candidate is gated by similarity to the labelled prompts, so prompts unlike the user's traffic keep the
default's score (it does not forget). The winner by out-of-fold APGR is checked on held-out labels against
the checkpoint it started from, and refused when worse.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routers.checkpoint import BUILTIN, HEAD_FILE, METADATA_FILE, checkpoint_dir, read_metadata, write_metadata
from routers.threshold import realised_share, threshold_for_share
from routers.training.adapter import Adapter, Array, Neighbours, layer_norm, unit
from routers.training.data import Example, data_hash, label_of, load_data
from routers.training.evaluate import curve, summary
from routers.training.request_features import feature_matrix

MIN_LABELS = 40
# The gate is fully open from the 5% quantile of the labelled prompts' own neighbour similarity up, and
# closes over as wide a band again below it as lies between that quantile and the median.
GATE_OPEN_QUANTILE = 0.05


class AdaptError(ValueError):
    """Adaptation cannot run or its result is refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One adapter recipe: ridge strength (None: no residual) and neighbour count and weight (0: no memory)."""

    ridge: float | None
    knn_k: int = 16
    knn_weight: float = 0.0

    @property
    def method(self) -> str:
        parts = (["residual-ridge"] if self.ridge is not None else []) + (["knn"] if self.knn_weight else [])
        return "+".join(parts) or "prior"


# Measured on unseen MMLU subjects (bench/adapt_subjects.py, bench/RESULTS.md): a strongly shrunk residual ridge
# plus a wide neighbour memory gained on every random halving and barely moved the default's own validation
# split; cross-validation on the user's labels picks among these strengths.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate(10000.0, 128, 1.0),
    Candidate(10000.0, 128, 0.5),
    Candidate(3000.0, 32, 0.5),
)


@dataclass
class Encoded:
    """Labelled rows with what the adapter sees: pooled features, head scores, labels and qualities."""

    examples: list[Example]
    pooled: Array
    prior: Array
    start: Array  # the scores of the checkpoint adaptation starts from (its own adapter applied, if any)

    def take(self, idx: Sequence[int] | np.ndarray[Any, Any]) -> Encoded:
        ix = np.asarray(idx, dtype=np.intp)
        return Encoded([self.examples[i] for i in ix], self.pooled[ix], self.prior[ix], self.start[ix])

    @property
    def labels(self) -> Array:
        return np.asarray([label_of(e, "soft-gap") for e in self.examples], dtype=np.float64)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]


def apgr(scores: Array, rows: Sequence[Example]) -> float:
    return curve("x", scores, [e.small for e in rows], [e.large for e in rows]).apgr


MAX_MEMORY = 5000


def fit_adapter(rows: Encoded, cand: Candidate, seed: int = 0, near: Neighbours | None = None) -> Adapter:
    """One candidate fitted on ``rows``: gate from the rows' own neighbour similarities, then ridge, then memory.

    ``near``: each row's nearest other rows (itself excluded), when the caller already has them.
    """
    z = layer_norm(rows.pooled)
    u = unit(z)
    cand = Candidate(cand.ridge, min(cand.knn_k, max(4, len(u) // 4)), cand.knn_weight)  # few labels: fewer neighbours
    keep = np.arange(len(u))
    if len(keep) > MAX_MEMORY:
        keep = np.sort(np.random.default_rng(seed).choice(len(u), MAX_MEMORY, replace=False))
        near = None
    if near is None:
        near = Neighbours.of(u, u[keep], cand.knn_k + 1)
        if len(keep) == len(u):  # drop each row from its own neighbours
            near = Neighbours.of(u, u, cand.knn_k, exclude_self=True)
    _, own = near.first(cand.knn_k)
    hi, median = (float(np.quantile(own.mean(1), q)) for q in (GATE_OPEN_QUANTILE, 0.5))
    lo = hi - max(median - hi, 1e-3)
    features = feature_matrix(rows.texts)
    f_mean, f_scale = features.mean(0), features.std(0) + 1e-6
    memory = np.ascontiguousarray(u[keep], dtype=np.float32)
    adapter = Adapter(cand.method, memory, np.zeros(len(keep)), cand.knn_k, cand.knn_weight, lo, hi, f_mean, f_scale)
    target = rows.labels - rows.prior
    if cand.ridge is not None:
        e_mean, e_scale = z.mean(0), z.std(0) + 1e-6
        x = np.hstack([(z - e_mean) / e_scale, (features - f_mean) / f_scale])
        centred = target - target.mean()
        gram = x.T @ x + cand.ridge * np.eye(x.shape[1])
        adapter.ridge_w = np.linalg.solve(gram, x.T @ centred)
        adapter.ridge_b = float(target.mean())
        adapter.embed_mean, adapter.embed_scale = e_mean, e_scale
    if cand.knn_weight:
        gate, _ = adapter.gate(u, near)
        before = rows.prior + gate * adapter.residual(z, rows.texts)
        adapter.memory_residual = (rows.labels - before)[keep]
    return adapter


def folds_of(examples: Sequence[Example], folds: int, seed: int) -> np.ndarray[Any, np.dtype[np.intp]]:
    """A deterministic fold number per row, by a seeded hash of its key."""
    return np.asarray(
        [int(hashlib.sha256(f"fold:{seed}:{e.key}".encode()).hexdigest()[:8], 16) % folds for e in examples],
        dtype=np.intp,
    )


def cross_validate(
    rows: Encoded, candidates: Sequence[Candidate], folds: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """Out-of-fold APGR of every candidate on ``rows`` (higher is better), best first; ``oof`` holds the scores."""
    fold = folds_of(rows.examples, folds, seed)
    k_max = max(c.knn_k for c in candidates)
    u = unit(layer_norm(rows.pooled))
    # Neighbours over all rows once; each fold drops its own rows from them (2x margin for the dropped ones).
    near = Neighbours.of(u, u, 2 * k_max + 16, exclude_self=True)
    splits = [(np.nonzero(fold == f)[0], np.nonzero(fold != f)[0]) for f in range(folds)]
    results = []
    for cand in candidates:
        oof = rows.prior.copy()
        for test, train in splits:
            if len(test) == 0 or len(train) < 8:
                continue
            part = rows.take(test)
            inner = near.restrict(train, train, cand.knn_k) if len(train) <= MAX_MEMORY else None
            adapter = fit_adapter(rows.take(train), cand, seed, inner)
            outer = near.restrict(test, train, cand.knn_k) if len(train) <= MAX_MEMORY else None
            oof[test] = adapter.apply(part.prior, part.pooled, part.texts, outer)
        results.append(
            {**asdict(cand), "method": cand.method, "cv_apgr": round(apgr(oof, rows.examples), 4), "oof": oof}
        )
    # Ties go to the simpler recipe (the earlier candidate): sorted() is stable.
    return sorted(results, key=lambda r: -r["cv_apgr"])


def encode(scorer: Any, examples: Sequence[Example], batch: int = 64) -> Encoded:
    """Pooled features, head scores and start scores of ``examples``, scored in length order."""
    texts = [e.text for e in examples]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    width = 0
    pooled: Array = np.zeros((0, 0))
    prior = np.zeros(len(texts))
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        z, p = scorer.embed_batch([texts[i] for i in idx])
        if not width:
            width = z.shape[1]
            pooled = np.zeros((len(texts), width))
        pooled[idx], prior[idx] = z, p
    start = prior if scorer.adapter is None else scorer.adapter.apply(prior, pooled, texts)
    return Encoded(list(examples), pooled, prior, np.asarray(start, dtype=np.float64))


def load_labels(paths: Sequence[str | Path]) -> list[Example]:
    """Every labelled row of every file, first occurrence of a text kept."""
    seen: set[str] = set()
    rows = []
    for path in paths:
        for example in load_data(path):
            if example.key not in seen:
                seen.add(example.key)
                rows.append(example)
    return rows


def evaluation(rows: Encoded, adapted: Array) -> dict[str, Any]:
    small, large = [e.small for e in rows.examples], [e.large for e in rows.examples]
    lengths = [float(len(e.text)) for e in rows.examples]
    return {
        "n": len(rows.examples),
        "start": summary(curve("start", rows.start, small, large)),
        "adapted": summary(curve("adapted", adapted, small, large)),
        "length": summary(curve("length", lengths, small, large)),
    }


def adapt_checkpoint(
    data: Sequence[str | Path],
    out: Path,
    *,
    source: str = BUILTIN,
    force: bool = False,
    folds: int = 5,
    seed: int = 0,
    threads: int = 2,
    candidates: Sequence[Candidate] = CANDIDATES,
    scorer: Any = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Adapt ``source`` to the labels in ``data`` and write the checkpoint ``out``; returns its metadata.

    Every label is held out once (``folds``-fold cross-fitting): the recipe with the best out-of-fold APGR is
    compared with ``source`` on the same held-out scores, then refitted on all labels. Raises
    :class:`AdaptError` when there are too few labels, when ``out`` exists (unless ``force``), or when the
    adapted router is worse than ``source`` on the held-out labels (unless ``force``).
    """
    started = time.perf_counter()
    if out.exists() and any(out.iterdir()) and not force:
        raise AdaptError(f"{out} exists and is not empty; pass --force to replace it")
    examples = load_labels(data)
    if len(examples) < MIN_LABELS:
        raise AdaptError(f"{len(examples)} labelled rows; adaptation needs at least {MIN_LABELS}")
    if scorer is None:
        from routers.classifier import EncoderScorer

        scorer = EncoderScorer.load(source, max_length=0, threads=threads)
    rows = encode(scorer, examples)
    encoded_s = time.perf_counter() - started
    log(f"{len(examples)} labelled rows; {folds}-fold cross-fitting: each fold held out from the fit that scores it")
    ranking = cross_validate(rows, candidates, folds, seed)
    best = Candidate(ranking[0]["ridge"], ranking[0]["knn_k"], ranking[0]["knn_weight"])
    report = evaluation(rows, ranking[0]["oof"])
    report["folds"] = folds
    gain = report["adapted"]["apgr"] - report["start"]["apgr"]
    log(f"best recipe {best.method} {asdict(best)}; held-out APGR: start {report['start']['apgr']:.4f}, "
        f"adapted {report['adapted']['apgr']:.4f} ({gain:+.4f})")
    if gain < 0 and not force:
        raise AdaptError(
            f"the adapted router is worse than {source} on held-out labels (out-of-fold APGR "
            f"{report['adapted']['apgr']:.4f} < {report['start']['apgr']:.4f} over {len(examples)} rows); "
            "nothing written (--force writes it anyway)"
        )
    final = fit_adapter(rows, best, seed)
    adapted_all = final.apply(rows.prior, rows.pooled, rows.texts)
    meta = _metadata(source, data, rows, best, ranking, report, adapted_all, encoded_s, started)
    _write(out, source, final, meta)
    log(f"wrote {out} ({best.method}) in {time.perf_counter() - started:.0f} s")
    return meta


def _metadata(
    source: str,
    data: Sequence[str | Path],
    rows: Encoded,
    best: Candidate,
    ranking: list[dict[str, Any]],
    report: dict[str, Any],
    adapted: Array,
    encoded_s: float,
    started: float,
) -> dict[str, Any]:
    meta = {k: v for k, v in read_metadata(checkpoint_dir(source)).items() if k != "adapter"}
    threshold = meta.get("threshold")
    start_list, adapted_list = rows.start.tolist(), adapted.tolist()
    adaptation: dict[str, Any] = {
        "from": source if source == BUILTIN else str(Path(source).resolve()),
        "data": [{"path": str(p), "sha256": data_hash(p)} for p in data],
        "labels": len(rows.examples),
        "method": best.method,
        "recipe": asdict(best),
        "cross_validation": [{k: v for k, v in r.items() if k != "oof"} for r in ranking],
        "held_out": report,
        "encode_seconds": round(encoded_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if threshold is not None:
        # The same large share on the user's traffic as the source's threshold gave.
        share = realised_share(start_list, float(threshold))
        meta["threshold"] = round(threshold_for_share(adapted_list, share), 6)
        adaptation["threshold"] = {"source": threshold, "large_share_on_labels": round(share, 4)}
    meta["adaptation"] = adaptation
    return meta


def _write(out: Path, source: str, adapter: Adapter, meta: dict[str, Any]) -> None:
    """Head and metadata copied from ``source``, the adapter beside them; written to a temporary folder first."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    src = checkpoint_dir(source)
    if not (src / HEAD_FILE).exists():
        raise AdaptError(f"{src} is not a pooled checkpoint (no {HEAD_FILE})")
    shutil.copy2(src / HEAD_FILE, tmp / HEAD_FILE)
    meta["adapter"] = adapter.save(tmp)
    digest = hashlib.sha256((tmp / HEAD_FILE).read_bytes() + (tmp / "adapter.safetensors").read_bytes())
    meta["checkpoint_id"] = digest.hexdigest()[:12]
    write_metadata(tmp, meta)
    json.loads((tmp / METADATA_FILE).read_text())
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
