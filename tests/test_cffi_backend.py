"""The C backend: built by the install step, checks every size before touching memory."""
from __future__ import annotations

import numpy as np
import pytest

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends import cffi_backend
from bnconform.runners.backends.cffi_backend import CffiBackend, CKernel, CKernelError
from bnconform.runners.backends.kernel_module import OutputRecycler
from bnconform.runners.backends.numpy_backend import NumpyBackend
from bnconform.runners.engine.execute import run_case

pytestmark = pytest.mark.skipif(CffiBackend().available() is not None, reason="C extension not built")


@pytest.fixture(scope="module")
def kernel() -> CKernel:
    return CKernel(threads=2)


def test_passes_exactly_what_numpy_passes() -> None:
    cases = load_cases([BUILTIN_SPECS])
    c_backend, np_backend = CffiBackend(), NumpyBackend()
    c_out = {c.id: run_case(c, c_backend).outcome for c in cases}
    np_out = {c.id: run_case(c, np_backend).outcome for c in cases}
    assert c_out == np_out and set(c_out.values()) == {"passed"}


def _lib_call(kernel: CKernel, x: np.ndarray, y: np.ndarray, n: int, c: int, s: int, *, x_len=None, y_len=None,
              c_len=None, mean=None, null_x=False) -> int:
    ffi, lib = kernel.ffi, kernel.lib
    mean = np.empty(max(c, 1)) if mean is None else mean
    invstd = np.empty_like(mean)
    return lib.bn_forward_train_f32(
        ffi.NULL if null_x else ffi.from_buffer("float[]", x), x.size if x_len is None else x_len,
        ffi.from_buffer("float[]", y), y.size if y_len is None else y_len, n, c, s,
        ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, c if c_len is None else c_len, 0.1, 1e-5,
        ffi.from_buffer("double[]", mean), ffi.from_buffer("double[]", invstd), 1)


def test_inconsistent_sizes_are_refused_before_any_access(kernel: CKernel) -> None:
    lib = kernel.lib
    x = np.ones(12, np.float32)
    y = np.full(12, 7.0, np.float32)
    # N, C, S claim 100 x 3 x 4 elements; the buffers say 12: refused, y untouched
    assert _lib_call(kernel, x, y, 100, 3, 4) == lib.BN_ERR_SIZE
    assert _lib_call(kernel, x, y, 1, 3, 4, y_len=11) == lib.BN_ERR_SIZE
    assert _lib_call(kernel, x, y, 1, 3, 4, c_len=2) == lib.BN_ERR_SIZE
    assert _lib_call(kernel, x, y, -1, 3, 4) == lib.BN_ERR_SHAPE
    assert _lib_call(kernel, x, y, 2**62, 2**3, 2**3, x_len=0, y_len=0) == lib.BN_ERR_SHAPE
    assert _lib_call(kernel, x, y, 1, 3, 4, null_x=True) == lib.BN_ERR_NULL
    assert (y == 7.0).all()
    assert _lib_call(kernel, x, y, 1, 3, 4) == lib.BN_OK


def test_python_side_turns_codes_into_clear_errors(kernel: CKernel) -> None:
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(CKernelError, match=r"bn_forward_eval_f32: a buffer length disagrees with N, C and S \(code 3\)"):
        kernel.forward_eval(x, None, None, np.zeros(2, np.float32), np.ones(2, np.float32), 1e-5)
    with pytest.raises(CKernelError, match="running variance update needs more than 1 value per channel"):
        kernel.forward_train(np.ones((1, 3), np.float32), None, None, np.zeros(3, np.float32), np.ones(3, np.float32), 0.1, 1e-5)


SHAPES_0_1 = [(0, 3), (0, 3, 5), (1, 3), (1, 3, 1, 1), (2, 3, 0), (0, 3, 0, 4), (1, 3, 1, 1, 1), (3, 3, 0, 0, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES_0_1)
def test_zero_or_one_value_per_channel(kernel: CKernel, shape: tuple[int, ...], dtype: type) -> None:
    """Every entry point on shapes with 0 or 1 values per channel: no crash, sane results."""
    x = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y, mean, invstd = kernel.forward_train(x, None, None, None, None, 0.1, 1e-5)
    assert y.shape == shape and mean.shape == (3,)
    if x.size:
        assert (y == 0).all()  # one value per channel: x - mean = 0
        dx, _, db = kernel.backward_train(np.ones_like(x), x, None, mean, invstd)
        assert dx.shape == shape and np.isfinite(db).all()
    assert kernel.forward_eval(x, None, None, rm, rv, 1e-5).shape == shape
    dx, _dw, db = kernel.backward_eval(np.ones_like(x), x, None, rm, rv, 1e-5)
    assert dx.shape == shape and (db == x.size // 3).all()


def test_thread_count_does_not_change_results() -> None:
    x = np.random.default_rng(0).normal(size=(8, 16, 40, 40)).astype(np.float32)
    one, two = CKernel(threads=1), CKernel(threads=2)
    y1 = one.forward_train(x, None, None, None, None, 0.1, 1e-5)[0].copy()
    y2 = two.forward_train(x, None, None, None, None, 0.1, 1e-5)[0]
    assert np.array_equal(y1, y2)


def test_recycler_never_hands_out_an_array_still_held() -> None:
    pool = OutputRecycler()
    a = pool.empty((4, 4), np.float32)
    b = pool.empty((4, 4), np.float32)
    assert a is not b
    view = b[1:]
    del a
    c = pool.empty((4, 4), np.float32)
    assert c is not b and view.base is b  # b is still held through its view


def test_missing_extension_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_extension():  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'runners.backends._bnc'")

    monkeypatch.setattr(cffi_backend, "_load", no_extension)
    case = load_cases([BUILTIN_SPECS])[0]
    result = run_case(case, CffiBackend())
    assert result.outcome == "skipped" and "was not built at install time" in result.message
