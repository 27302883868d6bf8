"""The four floating dtypes a case can name, as NumPy dtypes, with their unit roundoff.

bfloat16 has no NumPy dtype of its own; `ml_dtypes` (the package JAX uses for it) provides
one whose arrays convert to and from float64 with round-to-nearest-even, like torch's. It is
imported on first use (its import costs about a second): a run without bfloat16 never pays it.
"""
from __future__ import annotations

import functools
from typing import Literal

import numpy as np

DType = Literal["float16", "bfloat16", "float32", "float64"]
DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
LOW_PRECISION = frozenset({"float16", "bfloat16"})

_NUMPY: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}

# u = 2**-p for a p-bit significand (p counts the implicit bit): the largest relative error of
# one rounding to nearest.
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}


@functools.cache
def _bfloat16() -> np.dtype:  # cached: one import, one dtype object
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a case dtype name."""
    return _bfloat16() if name == "bfloat16" else _NUMPY[name]


def dtype_name(dtype: np.dtype) -> str:
    """A NumPy dtype's case name ('bfloat16' for ml_dtypes' dtype), or its own name for any other."""
    for name, dt in _NUMPY.items():
        if dt == dtype:
            return name
    if np.dtype(dtype).name == "bfloat16" and np.dtype(dtype) == _bfloat16():
        return "bfloat16"
    return str(dtype)


def accepts(module: str, data: str) -> bool:
    """Whether torch's CPU BatchNorm takes `data` input into a `module` of that dtype: the same
    dtype, or float16/bfloat16 input into a float32 module (statistics in float32). Every other
    pair raises RuntimeError "mixed dtype (CPU)"."""
    return module == data or (module == "float32" and data in LOW_PRECISION)
