"""Arrays across the worker boundary with their layout.

Pickle sends an ndarray's values in C (or Fortran) order, so a channels_last or sliced input
would reach a backend's worker as a contiguous array, and its output would come back without
the layout the run checks. `pack` replaces each array by its values and layout name
(cases/layouts.py), `unpack` rebuilds the layout on the other side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bnconform.cases import layouts


@dataclass(frozen=True)
class Laid:
    """An array in transit: C-ordered values and the layout to rebuild."""

    values: np.ndarray
    layout: str


def _layout(a: np.ndarray) -> str:
    if a.flags.c_contiguous:
        return "contiguous"
    if layouts.is_channels_last(a):
        return "channels_last" if a.ndim == 4 else "channels_last_3d"
    return "strided"


def _each(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """`leaf` applied to every value inside tuples, lists and dicts, the containers rebuilt."""
    if isinstance(value, tuple):
        return tuple(_each(v, leaf) for v in value)
    if isinstance(value, list):
        return [_each(v, leaf) for v in value]
    if isinstance(value, dict):
        return {k: _each(v, leaf) for k, v in value.items()}
    return leaf(value)


def _pack_one(value: Any) -> Any:
    if type(value) is np.ndarray and value.ndim > 0 and not value.flags.c_contiguous:
        return Laid(np.ascontiguousarray(value), _layout(value))
    return value


def _unpack_one(value: Any) -> Any:
    return layouts.arrange(value.values, value.layout) if isinstance(value, Laid) else value


def pack(value: Any) -> Any:
    """`value` with every non-contiguous array (also inside tuples, lists and dicts) made a Laid."""
    return _each(value, _pack_one)


def unpack(value: Any) -> Any:
    """The inverse of pack."""
    return _each(value, _unpack_one)
