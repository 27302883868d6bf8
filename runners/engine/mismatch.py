"""Compare one observed quantity with its expectation and say, readably, how it differs."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from bnconform.cases.schema import Tolerance


def _short(a: Any, limit: int = 8) -> str:
    if a is None:
        return "None"
    arr = np.asarray(a)
    flat = arr.ravel()
    body = np.array2string(flat[:limit], precision=8, separator=", ", max_line_width=200)
    more = f" ... ({flat.size} values, shape {tuple(arr.shape)})" if flat.size > limit else ""
    return (body[:-1] + more + "]") if more else (body if arr.ndim else f"{arr.item():.10g}")


def mismatch(quantity: str, expected: Any, actual: Any, tol: Tolerance) -> Optional[str]:
    """None when `actual` matches `expected` within `tol`; otherwise what differs and by how much.

    Expected None means "must be None". num_batches_tracked and integers compare exactly.
    Elements match when |actual - expected| <= atol + rtol * |expected| (NaN matches NaN, and an
    infinity the same infinity).
    """
    if expected is None or actual is None:
        if expected is None and actual is None:
            return None
        return f"expected {_short(expected)}, got {_short(actual)}"
    if quantity == "num_batches_tracked":
        if int(np.asarray(actual)) == int(np.asarray(expected)):
            return None
        return f"expected {int(np.asarray(expected))}, got {int(np.asarray(actual))} (exact)"
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        return f"shape differs: expected {tuple(e.shape)}, got {tuple(a.shape)}\n  expected: {_short(e)}\n  actual:   {_short(a)}"
    if e.size == 0:
        return None
    same = (np.isnan(e) & np.isnan(a)) | (np.isinf(e) & (a == e))  # NaN matches NaN, an infinity itself
    with np.errstate(invalid="ignore"):
        abs_err = np.where(same, 0.0, np.abs(a - e))
    abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
    allowed = tol.atol + tol.rtol * np.abs(np.nan_to_num(e))
    bad = abs_err > allowed
    if not bad.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(e != 0, abs_err / np.abs(e), np.where(abs_err > 0, np.inf, 0.0))
    rel_max = np.nanmax(rel) if not np.isnan(rel).all() else np.nan
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return (
        f"max abs error {abs_err.max():.3e} (atol {tol.atol:g}), max rel error {rel_max:.3e} (rtol {tol.rtol:g}); "
        f"{int(bad.sum())} of {bad.size} elements outside tolerance\n"
        f"  first differing index {first}: expected {e[first]:.10g}, actual {a[first]:.10g}\n"
        f"  expected: {_short(e)}\n"
        f"  actual:   {_short(a)}"
    )
