"""Ratios of medians with a 95% bootstrap interval, and the verdict they support.

Within a cell the rounds are paired (each round timed every candidate once, interleaved), so
the bootstrap resamples round indices jointly; between two runs (`bnconform compare`) the
rounds are independent and each side is resampled on its own. A percentile bootstrap of the
median is a few lines of NumPy; scipy.stats.bootstrap would add SciPy for the same result.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RESAMPLES = 2000


def _interval(ratios: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def paired_ratio(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) with its 95% interval, rounds resampled jointly."""
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n], dtype=float), np.asarray(b[:n], dtype=float)
    idx = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))
    ratios = np.median(x[idx], axis=1) / np.median(y[idx], axis=1)
    return (float(np.median(x) / np.median(y)), *_interval(ratios))


def independent_ratio(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) with its 95% interval, each side resampled on its own."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    mx = np.median(x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))], axis=1)
    my = np.median(y[rng.integers(0, len(y), size=(RESAMPLES, len(y)))], axis=1)
    return (float(np.median(x) / np.median(y)), *_interval(mx / my))


def verdict(lo: float, hi: float) -> str:
    """A time ratio's verdict: below 1 is faster, an interval spanning 1.0 says nothing."""
    if hi < 1.0:
        return "faster"
    if lo > 1.0:
        return "slower"
    return "no clear difference"
