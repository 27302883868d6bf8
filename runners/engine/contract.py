"""The output contract: what a backend returns must be what torch would hand its caller.

Values are compared in float64, so without these checks a backend returning float64 for a
float32 input, a list, a torch tensor or a counter held in an array would pass. A breach fails
the cell with the reason; no deviation switch explains it, so it is never diagnosed.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np

from bnconform.cases import layouts
from bnconform.cases.dtypes import DTYPES, numpy_dtype


class ContractViolation(Exception):
    """A backend returned something of the wrong kind, or wrote to its input: the cell fails."""


def _kind(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ not in ("builtins", "numpy") else kind.__name__


def _is_float(dtype: np.dtype) -> bool:
    """One of the four float dtypes (bfloat16 compared only when the name says so: its package
    loads on first use)."""
    return any(dtype == numpy_dtype(name) for name in DTYPES if name != "bfloat16" or dtype.name == "bfloat16")


def array(what: str, value: Any, dtype: Optional[np.dtype], shape: Optional[tuple[int, ...]], allow_none: bool = False) -> None:
    """`value` is a NumPy array of `dtype` (None: of one of the four float dtypes; which one is a
    checked quantity, compared with the dtype torch gives) and `shape` (or None, where allowed)."""
    kind = str(dtype) if dtype is not None else "a float dtype"
    if value is None:
        if allow_none:
            return
        raise ContractViolation(f"{what} is None; expected a numpy.ndarray of {kind}")
    if type(value) is not np.ndarray:  # a list, a tensor, a masked array: not what torch's caller gets
        raise ContractViolation(f"{what} is a {_kind(value)}; expected a numpy.ndarray of {kind}")
    if dtype is not None and value.dtype != dtype:
        raise ContractViolation(f"{what} has dtype {value.dtype}; expected {dtype}, as torch gives for {dtype} data")
    if dtype is None and not _is_float(value.dtype):
        raise ContractViolation(f"{what} has dtype {value.dtype}; expected one of {', '.join(DTYPES)}")
    if shape is not None and value.shape != shape:
        raise ContractViolation(f"{what} has shape {value.shape}; expected {shape}")


def counter(what: str, value: Any) -> None:
    """num_batches_tracked is an integer (or None), never an array or a float."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ContractViolation(f"{what} is a {_kind(value)} ({value!r:.60}); expected an int")


def state(what: str, value: Any, dtype: np.dtype, channels: int) -> None:
    """state_dict(): parameters and buffers as (C,) arrays of the module's dtype, the counter an integer."""
    if not isinstance(value, dict):
        raise ContractViolation(f"{what} returned a {_kind(value)}; expected a dict of arrays")
    for key, item in value.items():
        if key == "num_batches_tracked":
            if not (isinstance(item, (numbers.Integral, np.integer)) and not isinstance(item, bool)) and not (
                    isinstance(item, np.ndarray) and item.dtype.kind in "iu" and item.ndim == 0):
                raise ContractViolation(f"{what}['num_batches_tracked'] is {_kind(item)} {item!r:.60}; "
                                        "expected an int64 0-d array")
        else:
            array(f"{what}['{key}']", item, dtype, (channels,))


def grads(what: str, value: Any, input_shape: tuple[int, ...], channels: int,
          keys: tuple[str, ...] = ("input", "weight", "bias")) -> None:
    """backward() returns {input, weight, bias} (double_backward() {input, weight, output}):
    float arrays (the input-side ones of the input's shape, the others one per channel), or None."""
    if not isinstance(value, dict):
        raise ContractViolation(f"{what} returned a {_kind(value)}; expected a dict with keys {', '.join(keys)}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ContractViolation(f"{what} returned unknown keys {unknown}; expected {', '.join(keys)}")
    for key, grad in value.items():
        array(f"{what}['{key}']", grad, None, input_shape if key in ("input", "output") else (channels,), allow_none=True)


def shard_outputs(outputs: Any, shards: list[np.ndarray], layout: str) -> None:
    """forward_shards() returns one output per shard, each of its shard's shape, in `layout` (the
    outputs are compared concatenated, which would hide each one's own layout)."""
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(shards):
        raise ContractViolation(f"forward_shards() returned {_kind(outputs)}; expected a list of {len(shards)} arrays")
    for i, (y, x) in enumerate(zip(outputs, shards)):
        array(f"forward_shards() output {i}", y, None, x.shape)
        if y.ndim > 1 and not layouts.matches(y, layout):
            raise ContractViolation(f"forward_shards() output {i} is {layouts.describe(y)}; expected {layout}, "
                                    "as torch gives")


def unchanged(what: str, before: np.ndarray, after: np.ndarray, during: str = "") -> None:
    """The caller's input is read, never written: compares the bytes, so NaN and -0.0 count."""
    if before.tobytes() == after.tobytes():
        return
    a, b = before.reshape(-1), after.reshape(-1)
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    when = f" (written during {during}())" if during and not what.startswith(f"{during}()") else ""
    raise ContractViolation(f"{what} modified its input{when} ({int((~same).sum())} of {a.size} elements changed); "
                            "a BatchNorm must not write to the caller's array")
