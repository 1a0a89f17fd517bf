"""Adaptation on synthetic pooled features: it learns the user's domain, leaves other prompts alone, round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routers.training.adapt import CANDIDATES, Candidate, Encoded, apgr, cross_validate, fit_adapter
from routers.training.adapter import Adapter, Neighbours, layer_norm, unit
from routers.training.data import Example

WIDTH = 24


def _domain(n: int, seed: int, centre: np.ndarray, direction: np.ndarray, prefix: str) -> Encoded:
    """Rows near ``centre``; the large model is needed where the features point along ``direction``."""
    rng = np.random.default_rng(seed)
    pooled = centre + 0.5 * rng.normal(size=(n, WIDTH))
    hard = pooled @ direction > centre @ direction
    examples = [
        Example(f"{prefix} question {i}", 0.0 if h else 1.0, 1.0, "user", f"{prefix}{seed}-{i}") for i, h in enumerate(hard)
    ]
    prior = rng.uniform(0.3, 0.7, size=n)  # the default knows nothing about this domain
    return Encoded(examples, pooled, prior, prior)


@pytest.fixture
def axes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    return 3.0 * rng.normal(size=WIDTH), -3.0 * rng.normal(size=WIDTH), rng.normal(size=WIDTH)


@pytest.mark.parametrize("cand", [Candidate(30.0), Candidate(None, 16, 1.0), Candidate(300.0, 16, 0.5)])
def test_adapter_learns_the_domain_and_keeps_far_prompts_at_the_prior(
    axes: tuple[np.ndarray, np.ndarray, np.ndarray], cand: Candidate
) -> None:
    centre, far_centre, direction = axes
    train, test = _domain(300, 1, centre, direction, "mine"), _domain(200, 2, centre, direction, "mine")
    adapter = fit_adapter(train, cand)
    adapted = adapter.apply(test.prior, test.pooled, test.texts)
    assert apgr(adapted, test.examples) > apgr(test.prior, test.examples) + 0.08
    far = _domain(100, 3, far_centre, direction, "other")
    assert np.allclose(adapter.apply(far.prior, far.pooled, far.texts), far.prior)


def test_cross_validation_ranks_a_real_correction_above_the_prior(
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    centre, _, direction = axes
    ranking = cross_validate(_domain(200, 4, centre, direction, "mine"), [Candidate(None), *CANDIDATES])
    assert ranking[0]["method"] != "prior" and len(ranking) == len(CANDIDATES) + 1
    prior = next(r for r in ranking if r["method"] == "prior")
    assert ranking[0]["cv_apgr"] > prior["cv_apgr"] + 0.04


def test_restricted_neighbours_match_a_search_among_the_members_only() -> None:
    u = unit(layer_norm(np.random.default_rng(0).normal(size=(60, WIDTH))))
    members, queries = np.arange(0, 60, 2), np.arange(1, 60, 2)
    restricted = Neighbours.of(u, u, 40, exclude_self=True).restrict(queries, members, 5)
    direct = Neighbours.of(u[queries], u[members], 5)
    assert np.array_equal(restricted.index, direct.index)
    assert np.allclose(restricted.sims, direct.sims)


def test_adapter_file_round_trip_gives_the_same_scores(tmp_path: Path, axes: tuple[np.ndarray, ...]) -> None:
    centre, _, direction = axes
    train, test = _domain(120, 5, centre, direction, "mine"), _domain(50, 6, centre, direction, "mine")
    adapter = fit_adapter(train, Candidate(300.0, 16, 0.5))
    scalars = adapter.save(tmp_path)
    loaded = Adapter.load(tmp_path, scalars)
    before = adapter.apply(test.prior, test.pooled, test.texts)
    assert np.allclose(loaded.apply(test.prior, test.pooled, test.texts), before, atol=2e-3)
    with pytest.raises(ValueError, match="do not match"):
        Adapter.load(tmp_path, {**scalars, "knn_k": 0})
