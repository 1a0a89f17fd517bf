"""Threshold and calibration maths, the online share controller, and the evaluation curve, on synthetic scores."""

from __future__ import annotations

import random

import numpy as np
import pytest

from routers.base import decide
from routers.threshold import ShareController, realised_share, threshold_for_share
from routers.training.calibrate import calibration_table
from routers.training.evaluate import curve, oracle_curve, random_curve


def test_threshold_for_share_sends_that_share_large() -> None:
    scores = [random.Random(1).random() for _ in range(1000)]
    rng = random.Random(1)
    scores = [rng.betavariate(2, 5) for _ in range(1000)]
    for share in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
        t = threshold_for_share(scores, share)
        assert realised_share(scores, t) == pytest.approx(share, abs=0.001)
        assert sum(decide(s, t).tier == "large" for s in scores) == round(share * 1000)


def test_threshold_for_share_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        threshold_for_share([], 0.3)
    with pytest.raises(ValueError):
        threshold_for_share([0.5], 1.5)


def test_calibration_table_thresholds_fall_as_share_grows() -> None:
    scores = list(np.linspace(0, 1, 501))
    table = calibration_table(scores)
    thresholds = [row["threshold"] for row in table]
    assert thresholds == sorted(thresholds, reverse=True)
    assert table[3]["large_share"] == 0.3 and table[3]["threshold"] == pytest.approx(0.7, abs=0.003)


def _run(controller: ShareController, stream: list[float]) -> list[float]:
    shares = []
    for s in stream:
        controller.observe(s)
        shares.append(controller.realised_share())
    return shares


def test_share_controller_holds_target_on_a_stationary_stream() -> None:
    rng = random.Random(0)
    controller = ShareController(target=0.3, window=500, initial_threshold=0.9)
    shares = _run(controller, [rng.betavariate(2, 5) for _ in range(3000)])
    assert max(abs(s - 0.3) for s in shares[1000:]) <= 0.02


def test_share_controller_recovers_after_the_score_distribution_shifts() -> None:
    rng = random.Random(0)
    controller = ShareController(target=0.3, window=500, initial_threshold=0.5)
    before = [rng.betavariate(2, 5) for _ in range(2000)]
    after = [min(1.0, rng.betavariate(5, 2)) for _ in range(3000)]  # traffic suddenly looks much harder
    shares = _run(controller, before + after)
    assert abs(shares[1999] - 0.3) <= 0.02
    assert max(abs(s - 0.3) for s in shares[2000 + 1000 :]) <= 0.02
    assert controller.threshold() > 0.5


def test_random_scores_give_apgr_near_half_and_oracle_beats_them() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 2, 2000).astype(float)
    large = np.maximum(small, rng.integers(0, 2, 2000)).astype(float)
    assert random_curve(list(small), list(large)).apgr == pytest.approx(0.5)
    noise = curve("noise", list(rng.random(2000)), list(small), list(large))
    assert noise.apgr == pytest.approx(0.5, abs=0.05)
    oracle = oracle_curve(list(small), list(large))
    assert oracle.apgr > 0.8 and oracle.cpt(1.0) == pytest.approx(np.mean(large > small), abs=1e-9)
    assert random_curve(list(small), list(large)).cpt(0.5) == pytest.approx(0.5, abs=0.001)


def test_tied_scores_count_as_random_order() -> None:
    small, large = [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    flat = curve("flat", [0.5] * 4, small, large)
    assert flat.apgr == pytest.approx(0.5)
    assert list(flat.quality) == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])
