"""Routing data: load the shared MMLU/arena files and user JSONL, derive labels, hash, and split."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from routers.features import prompt_text, routing_text

LabelName = Literal["large-better", "soft-gap", "small-fails"]
LABELS: tuple[LabelName, ...] = ("large-better", "soft-gap", "small-fails")
LABEL_DEFINITIONS: dict[LabelName, str] = {
    "large-better": "1 when the large tier's quality is strictly higher than the small tier's, else 0",
    "soft-gap": "(1 + large - small) / 2 with qualities in [0, 1]: 1 large-only win, 0.5 tie, 0 small-only win",
    "small-fails": "1 - small quality: the small tier's shortfall, whatever the large tier did",
}
SplitName = Literal["all", "train", "dev", "val-random", "val-subject", "val-arena"]
SPLITS: tuple[SplitName, ...] = ("all", "train", "dev", "val-random", "val-subject", "val-arena")
ARENA_SMALL = "Mixtral-8x7B-Instruct-v0.1"
ARENA_LARGE = "gpt-4-1106-preview"
MMLU_FILE = "mmlu_train.csv"
ARENA_FILE = "arena_bench.jsonl"


class DataError(ValueError):
    """A data file cannot be read as routing data; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Example:
    """One prompt with the quality each tier reached on it, normalised to [0, 1]."""

    text: str
    small: float
    large: float
    group: str  # MMLU subject, "arena", or "user"
    key: str  # stable identity for splitting
    label: float | None = None  # an explicit 0/1 "large needed" label from user data


def label_of(example: Example, name: LabelName) -> float:
    """The training target ``P(large needed)`` for one example under a label definition.

    - ``large-better``: 1 when the large tier scored strictly higher than the small tier, else 0.
    - ``soft-gap``: ``(1 + large - small) / 2``: 1 large-only win, 0.5 a tie, 0 small-only win.
    - ``small-fails``: ``1 - small``: the small tier's shortfall, whatever the large tier did.
    """
    if example.label is not None:
        return example.label
    if name == "large-better":
        return 1.0 if example.large > example.small else 0.0
    if name == "soft-gap":
        return (1.0 + example.large - example.small) / 2.0
    return 1.0 - example.small


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_mmlu_csv(path: Path) -> list[Example]:
    """``subject,prompt,small_correct,large_correct`` rows (0/1 correctness)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Example(
                prompt_text(row["prompt"]),
                float(row["small_correct"]),
                float(row["large_correct"]),
                row["subject"],
                _key(row["subject"] + row["prompt"]),
            )
            for row in csv.DictReader(handle)
        ]


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not JSON: {exc}") from None


def load_arena_jsonl(path: Path, small: str = ARENA_SMALL, large: str = ARENA_LARGE) -> list[Example]:
    """Arena-bench rows with 1-10 judge ``scores`` per model; rows lacking either model are skipped."""
    examples = []
    for _, row in _read_jsonl(path):
        scores = row.get("scores", {})
        if small in scores and large in scores:
            examples.append(
                Example(
                    prompt_text(row["prompt"]),
                    (float(scores[small]) - 1.0) / 9.0,
                    (float(scores[large]) - 1.0) / 9.0,
                    "arena",
                    str(row.get("question_id") or _key(row["prompt"])),
                )
            )
    return examples


def text_of(row: dict[str, Any], where: str = "") -> str:
    """The routing text of a ``{"prompt": ...}`` or ``{"messages": [...]}`` object (as the gateway builds it)."""
    if isinstance(row.get("messages"), list):
        return routing_text(row["messages"])
    if isinstance(row.get("prompt"), str):
        return prompt_text(row["prompt"])
    raise DataError(f"{where}: needs a 'prompt' string or a 'messages' list")


def load_user_jsonl(path: Path) -> list[Example]:
    """User JSONL: ``prompt`` or ``messages``, plus ``small_score`` and ``large_score`` or a 0/1 ``label``.

    Scores may use any scale where higher is better (0/1 correctness, a 1-10 judge score); they are
    min-max normalised over the file so soft labels and quality curves share one [0, 1] scale.
    """
    rows = [(f"{path}:{number}", row) for number, row in _read_jsonl(path)]
    values = [float(row[k]) for _, row in rows for k in ("small_score", "large_score") if k in row]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    span = (high - low) or 1.0
    examples = []
    for where, row in rows:
        text = text_of(row, where)
        if "small_score" in row and "large_score" in row:
            small, large = (float(row["small_score"]) - low) / span, (float(row["large_score"]) - low) / span
            label = float(row["label"]) if "label" in row else None
        elif "label" in row:
            label = float(row["label"])
            small, large = 1.0 - label, 1.0
        else:
            raise DataError(f"{where}: needs 'small_score' and 'large_score', or a 0/1 'label'")
        examples.append(Example(text, small, large, str(row.get("group", "user")), _key(text), label))
    return examples


def load_data(path: str | Path) -> list[Example]:
    """A directory with the shared files, an MMLU-style CSV, an arena JSONL, or a user JSONL."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / MMLU_FILE, path / ARENA_FILE) if p.exists()]
        if not found:
            raise DataError(f"{path}: holds neither {MMLU_FILE} nor {ARENA_FILE}")
        return [example for file in found for example in load_data(file)]
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".csv":
        return load_mmlu_csv(path)
    first = next(iter(_read_jsonl(path)), (0, {}))[1]
    return load_arena_jsonl(path) if "scores" in first else load_user_jsonl(path)


def data_hash(path: str | Path) -> str:
    """sha256 over the bytes of the data file(s), in name order."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".jsonl")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _unit(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12


def held_out_subjects(examples: Sequence[Example], seed: int, share: float = 0.2) -> set[str]:
    """Whole MMLU subjects, chosen by a seeded hash, that together hold about ``share`` of the MMLU rows."""
    counts: dict[str, int] = {}
    for example in examples:
        if example.group not in ("arena", "user"):
            counts[example.group] = counts.get(example.group, 0) + 1
    chosen: set[str] = set()
    total = sum(counts.values())
    taken = 0
    for subject in sorted(counts, key=lambda s: _unit(seed, s)):
        if taken + counts[subject] <= share * total * 1.1:
            chosen.add(subject)
            taken += counts[subject]
        if taken >= share * total:
            break
    return chosen


def assign_split(examples: Sequence[Example], seed: int = 0) -> list[SplitName]:
    """Deterministic split of every example: unseen subjects, half the arena, 15% random val, 10% dev."""
    unseen = held_out_subjects(examples, seed)
    names: list[SplitName] = []
    for example in examples:
        u = _unit(seed, example.key)
        if example.group == "arena":
            names.append("val-arena" if u < 0.5 else "train")
        elif example.group in unseen:
            names.append("val-subject")
        elif u < 0.15:
            names.append("val-random")
        elif u < 0.25:
            names.append("dev")
        else:
            names.append("train")
    return names


def select(examples: Sequence[Example], split: SplitName, seed: int = 0) -> list[Example]:
    """The examples of one split (``all`` = every example)."""
    if split == "all":
        return list(examples)
    return [e for e, s in zip(examples, assign_split(examples, seed), strict=True) if s == split]
