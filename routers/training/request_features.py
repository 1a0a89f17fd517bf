"""Cheap request features a router can read without the encoder: length, turns, code and math markers."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from routers.features import TURN_SEPARATOR

FEATURE_NAMES: tuple[str, ...] = ("log_chars", "log_blocks", "code_markers", "math_markers", "digit_share")
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|;\s*$|[{}]|\bimport |#include|=>|\bSELECT\b", re.MULTILINE)
_MATH = re.compile(r"\\frac|\\sum|\\int|\^|[=<>≤≥×÷√∑∫]|\bsolve\b|\bprove\b|\bequation\b", re.IGNORECASE)


def request_features(text: str) -> list[float]:
    """One routing text -> :data:`FEATURE_NAMES` values (blocks: turns and paragraphs, as routing_text joins them)."""
    chars = len(text)
    digits = sum(c.isdigit() for c in text)
    return [
        math.log1p(chars),
        math.log1p(text.count(TURN_SEPARATOR)),
        math.log1p(len(_CODE.findall(text))),
        math.log1p(len(_MATH.findall(text))),
        digits / chars if chars else 0.0,
    ]


def feature_matrix(texts: Sequence[str]) -> NDArray[np.float64]:
    """``[n, len(FEATURE_NAMES)]`` request features."""
    return np.asarray([request_features(t) for t in texts], dtype=np.float64).reshape(len(texts), len(FEATURE_NAMES))
