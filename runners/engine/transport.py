"""Arrays across the worker boundary with their layout.

Pickle sends an ndarray's values in C (or Fortran) order, so a channels_last or sliced input
would reach a backend's worker as a contiguous array, and its output would come back without
the layout the run checks. `pack` replaces each array by its values and layout name
(cases/layouts.py), `unpack` rebuilds the layout on the other side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def pack(value: Any) -> Any:
    """`value` with every non-contiguous array (also inside tuples, lists and dicts) made a Laid."""
    if type(value) is np.ndarray and value.ndim > 0 and not value.flags.c_contiguous:
        return Laid(np.ascontiguousarray(value), _layout(value))
    if isinstance(value, tuple):
        return tuple(pack(v) for v in value)
    if isinstance(value, list):
        return [pack(v) for v in value]
    if isinstance(value, dict):
        return {k: pack(v) for k, v in value.items()}
    return value


def unpack(value: Any) -> Any:
    """The inverse of pack."""
    if isinstance(value, Laid):
        return layouts.arrange(value.values, value.layout)
    if isinstance(value, tuple):
        return tuple(unpack(v) for v in value)
    if isinstance(value, list):
        return [unpack(v) for v in value]
    if isinstance(value, dict):
        return {k: unpack(v) for k, v in value.items()}
    return value
