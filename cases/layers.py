"""The layer a BatchNorm folds into, in float64: a linear layer or a stride-1 'valid' convolution.

Used on both sides of a `fold` step: the reference applies the original layer and then BatchNorm,
the engine applies the folded layer a backend returned; the two must agree.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def apply_layer(kind: str, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    """linear: x (N, in) @ weight (out, in).T; conv: x (N, in, *s) cross-correlated with weight
    (out, in, *k), no padding, stride 1. Plus bias (out,) when given. float64 throughout."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if kind == "linear":
        y = x @ w.T
        shape: tuple[int, ...] = (1, -1)
    else:
        k = w.shape[2:]
        spatial = tuple(range(2, x.ndim))
        windows = sliding_window_view(x, k, axis=spatial)  # (N, in, *out_s, *k)
        letters = "defg"[: len(k)]
        y = np.einsum(f"ni...{letters},oi{letters}->no...", windows, w)
        shape = (1, -1) + (1,) * len(k)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape(shape)
    return y
