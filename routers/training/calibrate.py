"""Calibration: score a sample of traffic and pick the threshold that sends a target share large."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from routers.base import Scorer
from routers.threshold import threshold_for_share
from routers.training.data import DataError, load_data, text_of

TABLE_SHARES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def read_texts(path: str | Path) -> list[str]:
    """Routing texts from any supported data file, labelled or not (``prompt``/``messages`` JSONL lines)."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".csv":
        return [e.text for e in load_data(path)]
    texts = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not JSON: {exc}") from None
                texts.append(text_of(row, f"{path}:{number}"))
    return texts


def score_texts(scorer: Scorer, texts: Sequence[str], batch_size: int = 32, progress: bool = True) -> list[float]:
    """Scores in input order, batched as the gateway's micro-batcher would."""
    scores: list[float] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="scoring", disable=not progress):
        scores.extend(scorer.score_batch(texts[start : start + batch_size]))
    return scores


def calibration_table(scores: Sequence[float], shares: Sequence[float] = TABLE_SHARES) -> list[dict[str, float]]:
    """Threshold for each large share, for metadata and for operators."""
    return [{"large_share": s, "threshold": round(threshold_for_share(scores, s), 6)} for s in shares]


def write_csv(path: Path, rows: Sequence[dict[str, float]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["large_share", "threshold"])
        writer.writeheader()
        writer.writerows(rows)
