"""Memory layouts of an input array: how a spec's `layout:` becomes strides a backend receives.

- contiguous: C order (N, C, *spatial), torch's default.
- channels_last / channels_last_3d: a 4-D / 5-D array whose memory is (N, *spatial, C),
  torch.channels_last and torch.channels_last_3d; the output keeps that layout.
- strided: a sliced view (every other element of a buffer twice as long in the last axis, the
  skipped elements NaN, so a kernel that ignores the strides reads NaN); torch's output is
  contiguous.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

Layout = Literal["contiguous", "channels_last", "channels_last_3d", "strided"]
LAYOUTS: tuple[str, ...] = ("contiguous", "channels_last", "channels_last_3d", "strided")
RANK_OF = {"channels_last": 4, "channels_last_3d": 5}


def arrange(a: np.ndarray, layout: str) -> np.ndarray:
    """`a`'s values in `layout` (a new array; `a` itself is not changed)."""
    if layout == "contiguous":
        return a.copy(order="C")  # not np.ascontiguousarray, which makes a 0-D array 1-D
    if layout in RANK_OF:
        if a.ndim != RANK_OF[layout]:
            raise ValueError(f"layout {layout} needs a {RANK_OF[layout]}-D array, not {a.ndim}-D")
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    if layout == "strided":
        if a.ndim == 0:
            raise ValueError("a 0-D array has no strided layout")
        wide = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, dtype=a.dtype)
        view = wide[..., ::2]
        view[...] = a
        return view
    raise ValueError(f"unknown layout {layout!r}")


def is_channels_last(a: np.ndarray) -> bool:
    """The memory is (N, *spatial, C): what torch calls channels_last (4-D) or channels_last_3d (5-D)."""
    return a.ndim in (4, 5) and np.moveaxis(a, 1, -1).flags.c_contiguous


def matches(a: np.ndarray, layout: str) -> bool:
    """Whether `a` is laid out as `layout` (size-1 axes can make an array both contiguous and channels_last)."""
    if layout == "contiguous":
        return bool(a.flags.c_contiguous)
    if layout in RANK_OF:
        return a.ndim == RANK_OF[layout] and is_channels_last(a)
    return not a.flags.c_contiguous


def describe(a: np.ndarray) -> str:
    """The layout name of an array, for messages."""
    if a.flags.c_contiguous:
        return "contiguous"
    if is_channels_last(a):
        return "channels_last" if a.ndim == 4 else "channels_last_3d"
    return f"strided {tuple(a.strides)}"


def output_layout(input_layout: str) -> str:
    """The layout torch gives the output (and the input gradient) for an input of `input_layout`."""
    return input_layout if input_layout in RANK_OF else "contiguous"


def copy_keeping_strides(a: np.ndarray) -> np.ndarray:
    """A copy of `a` with the same strides: its whole buffer copied and the same view taken of it
    (a plain copy makes a sliced view contiguous, and a backend would never see strided memory)."""
    if a.flags.c_contiguous or is_channels_last(a):
        return a.copy(order="K")
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    if not base.flags.c_contiguous:
        return a.copy(order="K")
    offset = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return np.ndarray(a.shape, a.dtype, buffer=base.copy(), offset=offset, strides=a.strides)
