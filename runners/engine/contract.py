"""The output contract: what a backend returns must be what torch would hand its caller.

Values are compared in float64, so without these checks a backend returning float64 for a
float32 input, a list, a torch tensor or a counter held in an array would pass. A breach fails
the cell with the reason; no deviation switch explains it, so it is never diagnosed.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np


class ContractViolation(Exception):
    """A backend returned something of the wrong kind, or wrote to its input: the cell fails."""


def _kind(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ not in ("builtins", "numpy") else kind.__name__


def array(what: str, value: Any, dtype: np.dtype, shape: Optional[tuple[int, ...]], allow_none: bool = False) -> None:
    """`value` is a NumPy array of `dtype` and `shape` (or None, where that is allowed)."""
    if value is None:
        if allow_none:
            return
        raise ContractViolation(f"{what} is None; expected a numpy.ndarray of {dtype}")
    if type(value) is not np.ndarray:  # a list, a tensor, a masked array: not what torch's caller gets
        raise ContractViolation(f"{what} is a {_kind(value)}; expected a numpy.ndarray of {dtype}")
    if value.dtype != dtype:
        raise ContractViolation(f"{what} has dtype {value.dtype}; expected {dtype}, as torch gives for {dtype} data")
    if shape is not None and value.shape != shape:
        raise ContractViolation(f"{what} has shape {value.shape}; expected {shape}")


def counter(what: str, value: Any) -> None:
    """num_batches_tracked is an integer (or None), never an array or a float."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ContractViolation(f"{what} is a {_kind(value)} ({value!r:.60}); expected an int")


def state(what: str, value: Any, dtype: np.dtype, channels: int) -> None:
    """state_dict(): parameters and buffers as (C,) arrays of the case dtype, the counter an integer."""
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


def grads(what: str, value: Any, dtype: np.dtype, input_shape: tuple[int, ...], channels: int) -> None:
    """backward() returns {input, weight, bias}: arrays of the input's dtype, or None."""
    if not isinstance(value, dict):
        raise ContractViolation(f"{what} returned a {_kind(value)}; expected a dict with keys input, weight, bias")
    unknown = sorted(set(value) - {"input", "weight", "bias"})
    if unknown:
        raise ContractViolation(f"{what} returned unknown keys {unknown}; expected input, weight, bias")
    for key, grad in value.items():
        array(f"{what}['{key}']", grad, dtype, input_shape if key == "input" else (channels,), allow_none=True)


def unchanged(what: str, before: np.ndarray, after: np.ndarray, during: str = "") -> None:
    """The caller's input is read, never written: compares the bytes, so NaN and -0.0 count."""
    if before.tobytes() == after.tobytes():
        return
    a, b = before.reshape(-1), after.reshape(-1)
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    when = f" (written during {during}())" if during and not what.startswith(f"{during}()") else ""
    raise ContractViolation(f"{what} modified its input{when} ({int((~same).sum())} of {a.size} elements changed); "
                            "a BatchNorm must not write to the caller's array")
