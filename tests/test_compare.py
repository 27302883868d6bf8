"""Failure messages say what differed, by how much, against which tolerance, and where."""
from __future__ import annotations

import numpy as np

from bnconform.cases.schema import Tolerance
from bnconform.runners.engine.mismatch import mismatch

TOL = Tolerance(rtol=1e-4, atol=1e-5)


def test_within_tolerance_is_no_mismatch() -> None:
    assert mismatch("output", [1.0, 2.0], np.array([1.00001, 2.0], np.float32), TOL) is None


def test_message_names_errors_tolerance_and_first_index() -> None:
    msg = mismatch("running_var", [[1.0, 2.0], [3.0, 4.0]], np.array([[1.0, 2.0], [3.5, 4.0]]), TOL)
    assert "max abs error 5.000e-01" in msg and "atol 1e-05" in msg and "rtol 0.0001" in msg
    assert "first differing index (1, 0): expected 3, actual 3.5" in msg and "1 of 4" in msg


def test_none_and_shape_and_counter() -> None:
    assert "expected None" in mismatch("running_mean", None, np.zeros(2), TOL)
    assert "got None" in mismatch("running_mean", [0.0, 0.0], None, TOL)
    assert "shape differs" in mismatch("output", [1.0, 2.0], np.zeros(3), TOL)
    assert "exact" in mismatch("num_batches_tracked", 2, 3, TOL)
    assert mismatch("num_batches_tracked", 2, 2, TOL) is None


def test_nan_only_matches_nan() -> None:
    assert mismatch("output", [np.nan], np.array([np.nan]), TOL) is None
    assert mismatch("output", [1.0], np.array([np.nan]), TOL) is not None
