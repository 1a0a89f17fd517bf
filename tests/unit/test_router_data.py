"""Data loading, label definitions and the deterministic held-out splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routers.training.data import (
    DataError,
    Example,
    assign_split,
    data_hash,
    held_out_subjects,
    label_of,
    load_data,
    select,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing"


def _example(small: float, large: float, label: float | None = None) -> Example:
    return Example("q", small, large, "s", "k", label)


def test_label_definitions() -> None:
    only_large, both, only_small, neither = _example(0, 1), _example(1, 1), _example(1, 0), _example(0, 0)
    assert [label_of(e, "large-better") for e in (only_large, both, only_small, neither)] == [1, 0, 0, 0]
    assert [label_of(e, "soft-gap") for e in (only_large, both, only_small, neither)] == [1, 0.5, 0, 0.5]
    assert [label_of(e, "small-fails") for e in (only_large, both, only_small, neither)] == [1, 0, 0, 1]
    assert label_of(_example(0, 1, label=0.0), "large-better") == 0.0


def test_user_jsonl_accepts_prompt_messages_scores_and_labels(tmp_path: Path) -> None:
    file = tmp_path / "mine.jsonl"
    rows = [
        {"prompt": "hi", "small_score": 9, "large_score": 9},
        {
            "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "prove it"}],
            "small_score": 1,
            "large_score": 10,
        },
        {"prompt": "label only", "label": 1},
    ]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples = load_data(file)
    assert [e.text for e in examples] == ["hi", "prove it", "label only"]
    assert examples[1].small == 0.0 and examples[1].large == 1.0
    assert [label_of(e, "large-better") for e in examples] == [0.0, 1.0, 1.0]
    assert len(data_hash(file)) == 64


def test_user_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"prompt": "ok", "label": 0}\n{"prompt": "no scores"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        load_data(file)


def test_splits_are_deterministic_disjoint_and_hold_out_whole_subjects() -> None:
    examples = [Example(f"q{i}", 0, 1, f"subject{i % 20}", f"k{i}") for i in range(2000)]
    examples += [Example(f"a{i}", 0, 1, "arena", f"a{i}") for i in range(100)]
    splits = assign_split(examples, seed=0)
    assert splits == assign_split(examples, seed=0)
    unseen = held_out_subjects(examples, seed=0)
    assert 0.15 <= len(unseen) / 20 <= 0.3
    train_groups = {e.group for e in select(examples, "train")}
    assert not unseen & train_groups
    assert {e.group for e in select(examples, "val-subject")} == unseen
    assert 30 <= len(select(examples, "val-arena")) <= 70
    assert 0.1 <= len(select(examples, "val-random")) / 2000 <= 0.2


@pytest.mark.data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared routing data not found at {SHARED}")
def test_shared_data_loads_with_the_documented_sizes() -> None:
    examples = load_data(SHARED)
    mmlu = [e for e in examples if e.group != "arena"]
    assert len(mmlu) == 12_324
    assert 250 <= len(examples) - len(mmlu) <= 300
    assert all(0.0 <= e.small <= 1.0 and 0.0 <= e.large <= 1.0 for e in examples)
