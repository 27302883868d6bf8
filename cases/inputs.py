"""Turn a spec's array sources (literals or seeded generators) into NumPy arrays.

Seeded arrays must be the same bytes on every machine, so they use only PCG64's raw 64-bit
stream (bit-exact by NumPy's BitGenerator contract) and IEEE additions in a fixed order:
no libm call, whose last bit may differ between CPUs. `normal` is the Irwin-Hall sum of
twelve uniforms minus 6 (mean 0, variance 1, bounded by +-6), which is all a conformance
input needs.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .dtypes import numpy_dtype
from .layouts import arrange
from .schema import Generated, RandomArray

_TWO_POW_53 = float(2**53)


def uniform01(seed: int, count: int) -> np.ndarray:
    """`count` float64 values in [0, 1), each k / 2**53 exactly."""
    raw = np.random.PCG64(seed).random_raw(count)
    return (np.asarray(raw, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / _TWO_POW_53


def shape_for(spec: RandomArray, dim: int) -> tuple[int, ...]:
    if isinstance(spec.shape, dict):
        if dim not in spec.shape:
            raise ValueError(f"random array has no shape for dim={dim} (has {sorted(spec.shape)})")
        return tuple(spec.shape[dim])
    if isinstance(spec.shape, str):  # made concrete when the case is expanded (loader._shaped)
        raise ValueError(f"shape {spec.shape!r} outside a case that gives it one")
    return tuple(spec.shape)


def generate(spec: RandomArray, dim: int) -> np.ndarray:
    """The float64 array a seeded source stands for (cast to the case dtype by the caller).

    The last few are kept (read-only): both sides of a step, and a case run again for its
    diagnosis, ask for the same large arrays."""
    shape = shape_for(spec, dim)
    return _generated(spec.seed, shape, spec.distribution, spec.scale, spec.offset)


@functools.lru_cache(maxsize=8)
def _generated(seed: int, shape: tuple[int, ...], distribution: str, scale: float, offset: float) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if distribution == "normal":
        u = uniform01(seed, 12 * count).reshape(count, 12).T.copy()  # row k: the k-th uniform of each value
        base = u[0]
        for k in range(1, 12):  # fixed order: the same rounding everywhere
            base += u[k]
        base -= 6.0
    elif distribution == "uniform":
        base = uniform01(seed, count)
    elif distribution == "arange":
        base = np.arange(count, dtype=np.float64)
    else:  # constant
        base = np.ones(count, dtype=np.float64)
    values = (base * scale + offset).reshape(shape)
    values.flags.writeable = False
    return values


def materialize(source: Any, dim: int, dtype: str, layout: str = "contiguous") -> np.ndarray:
    """A literal or generated source as an array of `dtype` (rounded to nearest even) in `layout`."""
    values = generate(source.random, dim) if isinstance(source, Generated) else np.asarray(source, dtype=np.float64)
    return arrange(values.astype(numpy_dtype(dtype)), layout)
