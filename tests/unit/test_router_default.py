"""The shipped default router: it loads without a hub and tells a greeting from a hard proof."""

from __future__ import annotations

import json

import pytest

from routers.base import decide
from routers.checkpoint import METADATA_FILE, builtin_dir
from routers.classifier import EncoderScorer

GREETING = "Hi there! How are you today?"
PROOF = (
    "Prove that for every prime p > 3, p^2 - 1 is divisible by 24. Then prove by strong induction that every "
    "integer n >= 2 is a product of primes, and show step by step that the square root of 2 is irrational."
)


def test_shipped_default_has_weights_and_metadata() -> None:
    meta = json.loads((builtin_dir() / METADATA_FILE).read_text())
    assert meta["format"] == "pooled" and meta["label"]["name"] and len(meta["data"]["sha256"]) == 64
    assert 0.0 < meta["threshold"] < 1.0 and meta["calibration"]["table"]
    size = sum(p.stat().st_size for p in builtin_dir().iterdir())
    assert size < 25 * 1024 * 1024


@pytest.mark.slow
def test_default_sends_a_greeting_small() -> None:
    scorer = EncoderScorer.load("builtin", threads=2)
    threshold = scorer.recommended_threshold
    assert threshold is not None
    (greeting,) = scorer.score_batch([GREETING])
    assert decide(greeting, threshold).tier == "small", (greeting, threshold)


@pytest.mark.slow
def test_default_sends_a_hard_proof_large() -> None:
    scorer = EncoderScorer.load("builtin", threads=2)
    threshold = scorer.recommended_threshold
    assert threshold is not None
    greeting, proof = scorer.score_batch([GREETING, PROOF])
    assert proof > greeting
    assert decide(proof, threshold).tier == "large", (proof, threshold)
