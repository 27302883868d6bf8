"""The C backend: built by the install step, checks every size before touching memory; float16 and
bfloat16 data with float32-or-wider arithmetic; channels_last handled natively.

Expectations come from float64 NumPy computations written here (two-pass mean and variance),
never from the kernel itself.
"""
from __future__ import annotations

from typing import Any, Callable

import ml_dtypes
import numpy as np
import pytest

from bnconform.cases.loader import BUILTIN_SPECS, load_cases
from bnconform.runners.backends import cffi_backend
from bnconform.runners.backends.cffi_backend import CffiBackend, CKernel, CKernelError
from bnconform.runners.backends.kernel_module import OutputRecycler
from bnconform.runners.backends.numpy_backend import NumpyBackend
from bnconform.runners.engine.execute import run_case
from tests.helpers import default_cases

pytestmark = pytest.mark.skipif(CffiBackend().available() is not None, reason="C extension not built")

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
HALF = (F16, BF16)
DTYPES = (F16, BF16, F32, F64)
U64 = 2.0**-53

# ---- Tolerances, derived from unit roundoffs ------------------------------------------------------
# u_d: the data type's unit roundoff (float16 2^-11, bfloat16 2^-8, float32 2^-24, float64 2^-53);
# u_a: that of the type the kernel's element-wise maps compute in (float32 for float16, bfloat16 and
# float32 data; float64 for float64), also the type of its per-channel coefficients.
# The test data are exactly representable in the data type and the reference is float64 NumPy on
# those very values, so every difference is a rounding of the kernel (or of the reference):
#  * statistics are sums of n terms in double: recursive summation errs by at most n*u64*sum|terms|
#    (first order), and so does the reference, hence 2*n*u64*sum|terms| between them (3*n*u64*M for
#    a mean, M = max|x| of the channel, with the divisions). A two-pass variance errs relatively by
#    at most 2*n*u64 + (n*u64*M)^2/var: the error of the mean only enters squared.
#  * the map y = (x - m) * a + b: m and a rounded to u_a after a few double operations on the
#    statistics, then 3 operations in u_a; each rounding adds at most its unit roundoff times the
#    magnitude it acts on, in all at most (4*u_a + 5*u64)*(|a|*(|x - m| + |m|) + |b|). The float64
#    reference's own roundings add at most 10*u64 times the same. dx = dy*k1 + (x - m)*k2 + k3
#    counts the same way (its k's take a few more double operations). The tests allow
#    (6*u_a + 16*u64) times the magnitudes: the counts plus room for second-order terms.
#    Per-channel results (running buffers, dweight, dbias) are a few double operations (8*u64)
#    rounded once to the per-channel type (u_a), and once more into a 16-bit module's dtype.
#  * storing a float result as float16/bfloat16 rounds to nearest: at most u_d*|value| above the
#    type's normal range, half its smallest subnormal below (float16: 2^-25).
U = {F16: 2.0**-11, BF16: 2.0**-8, F32: 2.0**-24, F64: 2.0**-53}


def u_arith(dt: np.dtype) -> float:
    return U[F64] if dt == F64 else U[F32]


def arith(dt: np.dtype) -> float:
    """The element-wise maps' factor (see above)."""
    return 6 * u_arith(dt) + 16 * U64


def u_store(dt: np.dtype) -> float:
    """Rounding when a float result is stored in the data type (none: the map computes in it)."""
    return U[dt] if dt in HALF else 0.0


def sub_half(dt: np.dtype) -> float:
    return float(ml_dtypes.finfo(dt).smallest_subnormal) / 2 if dt in HALF else 0.0


def u_module(md: np.dtype) -> float:
    """Rounding of a float32 per-channel result into a 16-bit module's arrays."""
    return U[md] if md in HALF else 0.0


def assert_within(got: np.ndarray, ref: np.ndarray, tol: Any, what: str) -> None:
    err = np.abs(np.asarray(got, np.float64) - ref)
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), err.shape) if err.ndim else ()
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} beyond tolerance; at {i}: got "
                             f"{np.asarray(got, np.float64)[i]}, want {ref[i]}, tolerance {np.broadcast_to(tol, err.shape)[i]}")


# ---- float64 reference ------------------------------------------------------------------------
def axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def bc(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector broadcast against (N, C, *spatial)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def stats64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Two-pass mean and biased variance in float64; values per channel; max |x| per channel."""
    x64 = x.astype(np.float64)
    n = x64.size // x64.shape[1]
    mean = x64.sum(axis=axes(x64)) / n
    var = ((x64 - bc(mean, x64.ndim)) ** 2).sum(axis=axes(x64)) / n
    return mean, var, n, np.abs(x64).max(axis=axes(x64))


def var_rel(n: int, big: np.ndarray, var: np.ndarray) -> np.ndarray:
    return 2 * n * U64 + (n * U64 * big) ** 2 / var


def arrange(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "channels_last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    return np.ascontiguousarray(a)


def is_cl(a: np.ndarray) -> bool:
    return not a.flags.c_contiguous and bool(np.moveaxis(a, 1, -1).flags.c_contiguous)


def make_x(shape: tuple[int, ...], dt: np.dtype, layout: str, seed: int) -> np.ndarray:
    """Per-channel offsets and scales, rounded to dt (so the reference sees the kernel's values)."""
    rng = np.random.default_rng(seed)
    c, nd = shape[1], len(shape)
    x = bc(rng.uniform(-3, 3, c), nd) + bc(rng.uniform(0.5, 2, c), nd) * rng.standard_normal(shape)
    return arrange(x.astype(dt), layout)


def make_params(c: int, md: np.dtype, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed + 1000)
    return tuple(v.astype(md) for v in (rng.uniform(0.5, 1.5, c), rng.uniform(-1, 1, c), rng.uniform(-1, 1, c),
                                          rng.uniform(0.5, 2, c)))


@pytest.fixture(scope="module")
def kernel() -> CKernel:
    return CKernel(threads=2)


# ---- the suite's own cases ----------------------------------------------------------------------
def test_passes_exactly_what_numpy_passes() -> None:
    cases = default_cases()  # the full tier: tox -e shapes-full
    c_backend, np_backend = CffiBackend(), NumpyBackend()
    c_out = {c.id: run_case(c, c_backend).outcome for c in cases}
    np_out = {c.id: run_case(c, np_backend).outcome for c in cases}
    assert c_out == np_out and set(c_out.values()) == {"passed", "skipped"}
    # the one thing neither declares: double backward (skipped with that reason, never passed)
    skipped = [c for c in cases if c_out[c.id] == "skipped"]
    assert skipped and all("double_backward" in c.requires for c in skipped)


# ---- argument checks ------------------------------------------------------------------------
def _lib_call(kernel: CKernel, x: np.ndarray, y: np.ndarray, n: int, c: int, s: int, *, x_len=None, y_len=None,
              c_len=None, mean=None, null_x=False, channels_last=0) -> int:
    ffi, lib = kernel.ffi, kernel.lib
    mean = np.empty(max(c, 1)) if mean is None else mean
    invstd = np.empty_like(mean)
    return lib.bn_forward_train_f32(
        ffi.NULL if null_x else ffi.from_buffer("float[]", x), x.size if x_len is None else x_len,
        ffi.from_buffer("float[]", y), y.size if y_len is None else y_len, n, c, s, channels_last,
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
    assert _lib_call(kernel, x, y, 1, 3, 4, channels_last=2) == lib.BN_ERR_LAYOUT
    assert _lib_call(kernel, x, y, 1, 3, 4, channels_last=-1) == lib.BN_ERR_LAYOUT
    assert (y == 7.0).all()
    assert _lib_call(kernel, x, y, 1, 3, 4) == lib.BN_OK
    assert _lib_call(kernel, x, y, 1, 3, 4, channels_last=1) == lib.BN_OK


def test_batch_stats_entry_point_checks(kernel: CKernel) -> None:
    ffi, lib = kernel.ffi, kernel.lib
    x, mean, var = np.ones(12, np.uint16), np.full(3, 7.0), np.full(3, 7.0)

    def call(n: int, c: int, s: int, cl: int = 0, c_len: int = 3, x_len: int = 12, threads: int = 1) -> int:
        return lib.bn_batch_stats_f16(ffi.from_buffer("uint16_t[]", x), x_len, n, c, s, cl, ffi.from_buffer("double[]", mean),
                                      ffi.from_buffer("double[]", var), c_len, threads)

    assert call(2, 3, 3) == lib.BN_ERR_SIZE
    assert call(1, 3, 4, c_len=2) == lib.BN_ERR_SIZE
    assert call(1, 3, 4, cl=3) == lib.BN_ERR_LAYOUT
    assert call(1, 3, 4, threads=0) == lib.BN_ERR_THREADS
    assert call(-1, 3, 4) == lib.BN_ERR_SHAPE
    assert (mean == 7.0).all() and (var == 7.0).all()
    assert call(1, 3, 4) == lib.BN_OK
    assert (mean == 2.0**-24).all() and (var == 0).all()  # every value is the bits 0x0001: 2^-24


def test_python_side_turns_codes_into_clear_errors(kernel: CKernel) -> None:
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(CKernelError, match=r"bn_forward_eval_f32: a buffer length disagrees with N, C and S \(code 3\)"):
        kernel.forward_eval(x, None, None, np.zeros(2, np.float32), np.ones(2, np.float32), 1e-5)
    with pytest.raises(CKernelError, match="running variance update needs more than 1 value per channel"):
        kernel.forward_train(np.ones((1, 3), np.float32), None, None, np.zeros(3, np.float32), np.ones(3, np.float32), 0.1, 1e-5)


def test_strided_input_is_refused_naming_the_layout(kernel: CKernel) -> None:
    base = np.ones((4, 3, 5, 12), np.float32)
    for x in (base[..., ::2], base.transpose(0, 1, 3, 2), np.ones((4, 3, 10), np.float16)[:, :, ::2]):
        rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
        with pytest.raises(CKernelError, match="strided input: expected C-contiguous or channels_last"):
            kernel.forward_train(x, None, None, rm, rv, 0.1, 1e-5)
        with pytest.raises(CKernelError, match="strided input: expected C-contiguous or channels_last"):
            kernel.forward_eval(x, None, None, rm, rv, 1e-5)
        with pytest.raises(CKernelError, match="strided input: expected C-contiguous or channels_last"):
            kernel.batch_stats(x)
        assert (rm == 0).all() and (rv == 1).all()
    x = np.ones((4, 3, 5, 6), np.float32)
    dy = base[..., ::2]
    with pytest.raises(CKernelError, match="strided grad_output: expected C-contiguous or channels_last"):
        kernel.backward_eval(dy, x, None, np.zeros(3, np.float32), np.ones(3, np.float32), 1e-5)


def test_per_channel_dtypes_must_be_the_module_convention(kernel: CKernel) -> None:
    x = np.ones((4, 3), np.float16)
    with pytest.raises(CKernelError, match="per-channel array of dtype float64 with float16 input"):
        kernel.forward_eval(x, np.ones(3), None, np.zeros(3, np.float32), np.ones(3, np.float32), 1e-5)
    with pytest.raises(CKernelError, match="per-channel array of dtype bfloat16 with float16 input"):
        kernel.forward_eval(x, None, None, np.zeros(3, BF16), np.ones(3, BF16), 1e-5)
    with pytest.raises(CKernelError, match="per-channel array of dtype float32 with float64 input"):
        kernel.forward_eval(x.astype(F64), None, None, np.zeros(3, F32), np.ones(3, F32), 1e-5)
    with pytest.raises(CKernelError, match="unsupported dtype int32"):
        kernel.batch_stats(np.ones((4, 3), np.int32))


SHAPES_0_1 = [(0, 3), (0, 3, 5), (1, 3), (1, 3, 1, 1), (2, 3, 0), (0, 3, 0, 4), (1, 3, 1, 1, 1), (3, 3, 0, 0, 0)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES_0_1)
def test_zero_or_one_value_per_channel(kernel: CKernel, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Every entry point on shapes with 0 or 1 values per channel: no crash, sane results."""
    x = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    md = F32 if dtype in HALF else dtype
    rm, rv = np.zeros(3, md), np.ones(3, md)
    y, mean, invstd = kernel.forward_train(x, None, None, None, None, 0.1, 1e-5)
    assert y.shape == shape and y.dtype == dtype and mean.shape == (3,)
    if x.size:
        assert (y.astype(F64) == 0).all()  # one value per channel: x - mean = 0
        dx, _, db = kernel.backward_train(np.ones_like(x), x, None, mean, invstd)
        assert dx.shape == shape and np.isfinite(db).all()
    else:
        assert np.isnan(mean).all() and np.isnan(kernel.batch_stats(x)[1]).all()
    assert kernel.forward_eval(x, None, None, rm, rv, 1e-5).shape == shape
    dx, _dw, db = kernel.backward_eval(np.ones_like(x), x, None, rm, rv, 1e-5)
    assert dx.shape == shape and dx.dtype == dtype and db.dtype == md and (db == x.size // 3).all()


# ---- every dtype x layout x rank against float64 ----------------------------------------------------
# (data dtype, module dtype): 16-bit data in a float32 module (mixed precision) or in its own dtype
DT_CASES = [(F16, F32), (F16, F16), (BF16, F32), (BF16, BF16), (F32, F32), (F64, F64)]
DT_IDS = [f"{d}-in-{m}" for d, m in DT_CASES]
SHAPE_CASES = [
    ((64, 5), "contiguous"),
    ((4, 3, 6, 7), "contiguous"),
    ((4, 3, 6, 7), "channels_last"),
    ((2, 3, 4, 5, 3), "contiguous"),
    ((2, 3, 4, 5, 3), "channels_last"),
    ((8, 6, 32, 24), "contiguous"),  # plane path, two threads; channels_last: several chunks of rows
    ((8, 6, 32, 24), "channels_last"),
    ((2, 1100, 2, 3), "contiguous"),  # channels_last: two tiles of channels
    ((2, 1100, 2, 3), "channels_last"),
]
SHAPE_IDS = [f"{'x'.join(map(str, s))}-{lay}" for s, lay in SHAPE_CASES]


def assert_layout(out: np.ndarray, x: np.ndarray, layout: str) -> None:
    assert out.shape == x.shape and out.dtype == x.dtype
    if layout == "channels_last":
        assert is_cl(out), f"output strides {out.strides} are not channels_last"
    else:
        assert out.flags.c_contiguous


@pytest.mark.parametrize(("dt", "md"), DT_CASES, ids=DT_IDS)
@pytest.mark.parametrize(("shape", "layout"), SHAPE_CASES, ids=SHAPE_IDS)
def test_forward_train_against_float64(kernel: CKernel, dt: np.dtype, md: np.dtype, shape: tuple, layout: str) -> None:
    x = make_x(shape, dt, layout, seed=len(shape) * 7 + shape[1])
    assert is_cl(x) == (layout == "channels_last")
    w, b, rm, rv = make_params(shape[1], md, seed=shape[1])
    rm0, rv0 = rm.astype(F64), rv.astype(F64)
    factor, eps, nd = 0.1, 1e-5, len(shape)

    y, mean, invstd = kernel.forward_train(x, w, b, rm, rv, factor, eps)

    m_r, var_r, n, big = stats64(x)
    is_r = 1 / np.sqrt(var_r + eps)
    dm = 3 * n * U64 * big  # statistics, see the derivation above
    rho = var_rel(n, big, var_r) + 4 * U64
    assert_within(mean, m_r, dm, "save_mean")
    assert_within(invstd, is_r, rho * is_r, "save_invstd")

    x64, w64, b64 = x.astype(F64), w.astype(F64), b.astype(F64)
    a_r = w64 * is_r
    d = x64 - bc(m_r, nd)
    y_r = d * bc(a_r, nd) + bc(b64, nd)
    a_abs = bc(np.abs(a_r), nd)
    tol = (u_store(dt) * np.abs(y_r) + arith(dt) * (a_abs * (np.abs(d) + bc(np.abs(m_r), nd)) + bc(np.abs(b64), nd))
           + a_abs * (bc(dm, nd) + np.abs(d) * bc(rho, nd)) + sub_half(dt))
    assert_layout(y, x, layout)
    assert_within(y, y_r, tol, "y")

    unbiased = var_r * n / (n - 1)
    rm_r = (1 - factor) * rm0 + factor * m_r
    rv_r = (1 - factor) * rv0 + factor * unbiased
    u_buf = u_arith(dt) + u_module(md)  # rounded to the per-channel type, then to a 16-bit module's
    assert rm.dtype == md and rv.dtype == md  # updated in place, in their own dtype
    assert_within(rm, rm_r, u_buf * np.abs(rm_r) + factor * dm + 8 * U64 * (np.abs(rm0) + factor * np.abs(m_r)), "running_mean")
    assert_within(rv, rv_r, u_buf * np.abs(rv_r) + factor * rho * unbiased + 8 * U64 * (rv0 + factor * unbiased), "running_var")


@pytest.mark.parametrize(("dt", "md"), DT_CASES, ids=DT_IDS)
@pytest.mark.parametrize(("shape", "layout"), SHAPE_CASES, ids=SHAPE_IDS)
def test_forward_eval_against_float64(kernel: CKernel, dt: np.dtype, md: np.dtype, shape: tuple, layout: str) -> None:
    x = make_x(shape, dt, layout, seed=len(shape) * 5 + shape[1])
    w, b, rm, rv = make_params(shape[1], md, seed=shape[1] + 1)
    rm_before, rv_before = rm.copy(), rv.copy()
    eps, nd = 1e-5, len(shape)

    y = kernel.forward_eval(x, w, b, rm, rv, eps)

    x64, w64, b64, rm64 = x.astype(F64), w.astype(F64), b.astype(F64), rm.astype(F64)
    a_r = w64 / np.sqrt(rv.astype(F64) + eps)
    d = x64 - bc(rm64, nd)
    y_r = d * bc(a_r, nd) + bc(b64, nd)
    tol = (u_store(dt) * np.abs(y_r) + sub_half(dt)
           + arith(dt) * (bc(np.abs(a_r), nd) * (np.abs(d) + bc(np.abs(rm64), nd)) + bc(np.abs(b64), nd)))
    assert_layout(y, x, layout)
    assert_within(y, y_r, tol, "y")
    assert np.array_equal(rm, rm_before) and np.array_equal(rv, rv_before)


def _grad_tolerances(dt: np.dtype, md: np.dtype, n: int, dy64: np.ndarray, spread: np.ndarray, scale: np.ndarray,
                     dw_r: np.ndarray, db_r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sum errors (dbias, sum dy*(x - center)) and the tolerances of dweight and dbias."""
    ax = axes(dy64)
    d_db = 2 * n * U64 * np.abs(dy64).sum(axis=ax)
    d_dyx = 2 * n * U64 * (np.abs(dy64) * spread).sum(axis=ax)
    u_out = u_arith(dt) + u_module(md) + 8 * U64
    return d_db, d_dyx, u_out * np.abs(dw_r) + d_dyx * scale, u_out * np.abs(db_r) + d_db


@pytest.mark.parametrize(("dt", "md"), DT_CASES, ids=DT_IDS)
@pytest.mark.parametrize(("shape", "layout"), SHAPE_CASES, ids=SHAPE_IDS)
def test_backward_train_against_float64(kernel: CKernel, dt: np.dtype, md: np.dtype, shape: tuple, layout: str) -> None:
    x = make_x(shape, dt, layout, seed=len(shape) * 3 + shape[1])
    dy = arrange(np.random.default_rng(shape[1]).standard_normal(shape).astype(dt), layout)
    w = make_params(shape[1], md, seed=shape[1] + 2)[0]
    nd = len(shape)
    m_r, var_r, n, _ = stats64(x)
    is_r = 1 / np.sqrt(var_r + 1e-5)

    dx, dw, db = kernel.backward_train(dy, x, w, m_r, is_r)  # the reference's statistics, not the kernel's

    x64, dy64, w64 = x.astype(F64), dy.astype(F64), w.astype(F64)
    d = x64 - bc(m_r, nd)
    db_r = dy64.sum(axis=axes(x))
    dw_r = (dy64 * d).sum(axis=axes(x)) * is_r
    k1, k2, k3 = w64 * is_r, -w64 * is_r * is_r * dw_r / n, -w64 * is_r * db_r / n
    dx_r = dy64 * bc(k1, nd) + d * bc(k2, nd) + bc(k3, nd)
    d_db, d_dyx, tol_dw, tol_db = _grad_tolerances(dt, md, n, dy64, np.abs(d), is_r, dw_r, db_r)
    tol = (u_store(dt) * np.abs(dx_r) + sub_half(dt)
           + arith(dt) * (np.abs(dy64 * bc(k1, nd)) + bc(np.abs(k2), nd) * (np.abs(d) + bc(np.abs(m_r), nd))
                             + bc(np.abs(k3), nd))
           + bc(np.abs(w64) * is_r * d_db / n, nd) + np.abs(d) * bc(np.abs(w64) * is_r**3 * d_dyx / n, nd))
    assert_layout(dx, x, layout)
    assert_within(dx, dx_r, tol, "dx")
    assert dw.dtype == md and db.dtype == md
    assert_within(dw, dw_r, tol_dw, "dweight")
    assert_within(db, db_r, tol_db, "dbias")


@pytest.mark.parametrize(("dt", "md"), DT_CASES, ids=DT_IDS)
@pytest.mark.parametrize(("shape", "layout"), SHAPE_CASES, ids=SHAPE_IDS)
def test_backward_eval_against_float64(kernel: CKernel, dt: np.dtype, md: np.dtype, shape: tuple, layout: str) -> None:
    x = make_x(shape, dt, layout, seed=len(shape) * 11 + shape[1])
    dy = arrange(np.random.default_rng(shape[1] + 3).standard_normal(shape).astype(dt), layout)
    w, _, rm, rv = make_params(shape[1], md, seed=shape[1] + 3)
    eps, nd = 1e-5, len(shape)

    dx, dw, db = kernel.backward_eval(dy, x, w, rm, rv, eps)

    x64, dy64, rm64 = x.astype(F64), dy.astype(F64), rm.astype(F64)
    n = x.size // shape[1]
    inv = 1 / np.sqrt(rv.astype(F64) + eps)
    k1 = w.astype(F64) * inv
    d = x64 - bc(rm64, nd)
    dx_r = dy64 * bc(k1, nd)
    db_r = dy64.sum(axis=axes(x))
    dw_r = (dy64 * d).sum(axis=axes(x)) * inv
    _, _, tol_dw, tol_db = _grad_tolerances(dt, md, n, dy64, np.abs(d), inv, dw_r, db_r)
    assert_layout(dx, x, layout)
    assert_within(dx, dx_r, (u_store(dt) + arith(dt)) * np.abs(dx_r) + sub_half(dt), "dx")
    assert dw.dtype == md and db.dtype == md
    assert_within(dw, dw_r, tol_dw, "dweight")
    assert_within(db, db_r, tol_db, "dbias")


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "layout"), SHAPE_CASES, ids=SHAPE_IDS)
def test_batch_stats_against_float64(kernel: CKernel, dt: np.dtype, shape: tuple, layout: str) -> None:
    x = make_x(shape, dt, layout, seed=len(shape) * 13 + shape[1])
    mean, var = kernel.batch_stats(x)
    m_r, var_r, n, big = stats64(x)
    assert mean.dtype == F64 and var.dtype == F64
    assert_within(mean, m_r, 3 * n * U64 * big, "mean")
    assert_within(var, var_r, var_rel(n, big, var_r) * var_r, "var")


# ---- gradients' dtypes -----------------------------------------------------------------------
def test_grad_dtype_follows_the_module(kernel: CKernel) -> None:
    x = make_x((6, 3, 4), F16, "contiguous", 1)
    dy = np.ones_like(x)
    m, v = x.astype(F64).mean(axis=(0, 2)), x.astype(F64).var(axis=(0, 2))
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    assert kernel.backward_train(dy, x, None, m, 1 / np.sqrt(v + 1e-5))[1].dtype == F32  # no weight: float32
    assert kernel.backward_train(dy, x, np.ones(3, F16), m, 1 / np.sqrt(v))[2].dtype == F16  # the weight's
    _, dw, db = kernel.backward_eval(dy, x, None, rm, rv, 1e-5, param_dtype=F16)  # param_dtype wins
    assert dw.dtype == F16 and db.dtype == F16 and (db == 24).all()
    _, dw, _ = kernel.backward_eval(dy, x, np.ones(3, F32), rm, rv, 1e-5, param_dtype=BF16)
    assert dw.dtype == BF16
    x32 = x.astype(F32)
    assert kernel.backward_eval(np.ones_like(x32), x32, None, rm, rv, 1e-5)[1].dtype == F32


# ---- channels_last: native, no copy ----------------------------------------------------------------
class _Spy:
    """Stands in for the cffi lib: records every entry point's arguments, then calls it."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._lib, name)
        if not name.startswith("bn_") or not callable(attr):
            return attr

        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            return attr(*args)

        return call


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 4, 3, 5, 2)], ids=["4d", "5d"])
def test_channels_last_is_not_copied(dt: np.dtype, shape: tuple) -> None:
    """The C code gets x's own memory with channels_last=1 (a copy to NCHW would be another address)."""
    k = CKernel(threads=1)
    spy = _Spy(k.lib)
    k.lib = spy
    ffi = k.ffi
    x = make_x(shape, dt, "channels_last", 3)
    dy = arrange(np.ones(shape, dt), "channels_last")
    md = F32 if dt in HALF else dt
    rm, rv = np.zeros(shape[1], md), np.ones(shape[1], md)

    def addr(p: Any) -> int:
        return int(ffi.cast("uintptr_t", ffi.cast("void *", p)))

    def start(a: np.ndarray) -> int:
        return int(a.__array_interface__["data"][0])

    y, mean, invstd = k.forward_train(x, None, None, rm, rv, 0.1, 1e-5)
    y_eval = k.forward_eval(x, None, None, rm, rv, 1e-5)
    dx, _, _ = k.backward_train(dy, x, None, mean, invstd)
    dx_eval, _, _ = k.backward_eval(dy, x, None, rm, rv, 1e-5)
    k.batch_stats(x)
    for out in (y, y_eval, dx, dx_eval):
        assert is_cl(out)
    names = [name for name, _ in spy.calls if name != "bn_strerror"]
    sfx = cffi_backend._SUFFIX[dt]
    assert names == [f"bn_{e}_{sfx}" for e in ("forward_train", "forward_eval", "backward_train", "backward_eval", "batch_stats")]
    (_, ft), (_, fe), (_, bt), (_, be), (_, bs) = spy.calls
    # forward: x, x_len, y, y_len, N, C, S, channels_last; backward: dy, dy_len, x, dx, x_len, N, C, S, channels_last
    assert addr(ft[0]) == start(x) and addr(ft[2]) == start(y) and ft[7] == 1
    assert addr(fe[0]) == start(x) and addr(fe[2]) == start(y_eval) and fe[7] == 1
    for call, out in ((bt, dx), (be, dx_eval)):
        assert addr(call[0]) == start(dy) and addr(call[2]) == start(x) and addr(call[3]) == start(out) and call[8] == 1
    assert addr(bs[0]) == start(x) and bs[5] == 1


def test_dy_in_the_other_layout_is_taken_in_x_layout(kernel: CKernel) -> None:
    x = make_x((4, 3, 5, 6), F32, "channels_last", 4)
    dy_cl = arrange(np.random.default_rng(4).standard_normal(x.shape).astype(F32), "channels_last")
    dy_c = np.ascontiguousarray(dy_cl)
    m, v = x.astype(F64).mean(axis=(0, 2, 3)), x.astype(F64).var(axis=(0, 2, 3))
    want = [a.copy() for a in kernel.backward_train(dy_cl, x, None, m, 1 / np.sqrt(v + 1e-5))]
    got = kernel.backward_train(dy_c, x, None, m, 1 / np.sqrt(v + 1e-5))
    assert is_cl(got[0])
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    # and the other way round: contiguous x, channels_last dy
    xc = np.ascontiguousarray(x)
    want = [a.copy() for a in kernel.backward_train(dy_c, xc, None, m, 1 / np.sqrt(v + 1e-5))]
    got = kernel.backward_train(dy_cl, xc, None, m, 1 / np.sqrt(v + 1e-5))
    assert got[0].flags.c_contiguous
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


def test_channels_last_float32_offset_data_keeps_its_variance(kernel: CKernel) -> None:
    """1e4 + N(0, 1) in float32, channels_last: a float32 (or one-pass E[x^2] - E[x]^2) accumulation
    would lose the variance; the two-pass double one gets it to ~1e-11."""
    rng = np.random.default_rng(9)
    x = arrange((1e4 + rng.standard_normal((16, 4, 32, 32))).astype(F32), "channels_last")
    assert is_cl(x)
    m_r, var_r, n, big = stats64(x)
    mean, var = kernel.batch_stats(x)
    assert_within(mean, m_r, 3 * n * U64 * big, "mean")
    assert_within(var, var_r, var_rel(n, big, var_r) * var_r, "var")
    rm, rv = np.zeros(4, F32), np.ones(4, F32)
    _, mean, invstd = kernel.forward_train(x, None, None, rm, rv, 1.0, 1e-5)
    is_r = 1 / np.sqrt(var_r + 1e-5)
    assert_within(invstd, is_r, (var_rel(n, big, var_r) + 4 * U64) * is_r, "save_invstd")
    unbiased = var_r * n / (n - 1)
    assert_within(rv, unbiased, U[F32] * unbiased + var_rel(n, big, var_r) * unbiased, "running_var")


def test_float16_batch_whose_sum_overflows_float16(kernel: CKernel) -> None:
    rng = np.random.default_rng(5)
    x = (300 + rng.uniform(-4, 4, (1, 1, 256, 256))).astype(F16)
    with np.errstate(over="ignore"):
        assert np.isinf(x.sum(dtype=F16))  # 65536 values near 300: the sum is far beyond float16's 65504
    rm, rv = np.zeros(1, F32), np.ones(1, F32)
    y, mean, _ = kernel.forward_train(x, None, None, rm, rv, 0.1, 1e-5)
    m_r, var_r, n, big = stats64(x)
    assert y.dtype == F16 and np.isfinite(y.astype(F32)).all()
    assert 299 < mean[0] < 301 and abs(mean[0] - m_r[0]) <= 3 * n * U64 * big[0]
    assert abs(float(y.astype(F64).mean())) < 1e-2 and abs(float(y.astype(F64).std()) - 1) < 1e-2
    assert 29.9 < rm[0] < 30.1 and abs(rm[0] - 0.1 * m_r[0]) <= U[F32] * 0.1 * m_r[0]
    assert_within(rv, 0.9 + 0.1 * var_r * n / (n - 1), U[F32] * 2, "running_var")
    d = x.astype(F64) - m_r[0]
    y_r = d / np.sqrt(var_r[0] + 1e-5)
    assert_within(y, y_r, U[F16] * np.abs(y_r) + 8 * U[F32] * (np.abs(y_r) + abs(m_r[0] / np.sqrt(var_r[0]))) + 2.0**-25, "y")


def test_thread_count_does_not_change_results() -> None:
    x = np.random.default_rng(0).normal(size=(8, 16, 40, 40)).astype(np.float32)
    one, two = CKernel(threads=1), CKernel(threads=2)
    y1 = one.forward_train(x, None, None, None, None, 0.1, 1e-5)[0].copy()
    y2 = two.forward_train(x, None, None, None, None, 0.1, 1e-5)[0]
    assert np.array_equal(y1, y2)


@pytest.mark.parametrize("dt", [F16, F32], ids=str)
def test_thread_count_does_not_change_channels_last_results(dt: np.dtype) -> None:
    """Rows are cut into chunks by size, not by thread: 1 or 2 threads give the same bits."""
    x = make_x((8, 16, 40, 40), dt, "channels_last", 8)
    dy = arrange(np.random.default_rng(8).standard_normal(x.shape).astype(dt), "channels_last")
    results = []
    for threads in (1, 2):
        k = CKernel(threads=threads)
        y, mean, invstd = k.forward_train(x, None, None, None, None, 0.1, 1e-5)
        dx, dw, db = k.backward_train(dy, x, None, mean, invstd)
        results.append([a.copy() for a in (y, mean, invstd, dx, dw, db, *k.batch_stats(x))])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


# ---- 16-bit conversions ----------------------------------------------------------------------
def _convert(kernel: CKernel, name: str, src: np.ndarray) -> np.ndarray:
    ffi, lib = kernel.ffi, kernel.lib
    to_float = name.endswith("_to_f32")
    dst = np.empty(src.shape, F32 if to_float else np.uint16)
    s_type, d_type = ("uint16_t[]", "float[]") if to_float else ("float[]", "uint16_t[]")
    assert getattr(lib, name)(ffi.from_buffer(s_type, src), ffi.from_buffer(d_type, dst), src.size) == lib.BN_OK
    return dst


ALL_BITS = np.arange(65536, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize(("sfx", "dt"), [("f16", F16), ("bf16", BF16)])
def test_16_bit_round_trip_of_every_bit_pattern(kernel: CKernel, sfx: str, dt: np.dtype) -> None:
    wide = _convert(kernel, f"bn_{sfx}_to_f32", ALL_BITS)
    ref = ALL_BITS.view(dt).astype(F32)  # NumPy's / ml_dtypes' widening
    nan = np.isnan(ref)
    assert nan.sum() == (2046 if dt == F16 else 254)
    assert np.array_equal(np.isnan(wide), nan)
    assert np.array_equal(wide[~nan].view(np.uint32), ref[~nan].view(np.uint32))  # bits: signed zeros, subnormals, inf
    back = _convert(kernel, f"bn_f32_to_{sfx}", wide)
    assert np.array_equal(back, ALL_BITS)  # exact, NaNs (payload and sign) included


def _neighbours(f: np.ndarray) -> np.ndarray:
    """f and the float32 values either side of it, both signs."""
    f = f.astype(F32)
    both = np.concatenate([f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))])
    return np.concatenate([both, -both])


def _random_floats(count: int) -> np.ndarray:
    return np.random.default_rng(11).integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32).view(F32)


def _same_rounding(got_bits: np.ndarray, want: np.ndarray) -> None:
    want_bits = want.view(np.uint16)
    nan = np.isnan(want.astype(F32))
    assert np.array_equal(np.isnan(got_bits.view(want.dtype).astype(F32)), nan)  # NaN stays NaN
    diff = np.flatnonzero((got_bits != want_bits) & ~nan)
    assert diff.size == 0, f"{diff.size} values rounded differently, e.g. bits {got_bits[diff[:3]]} != {want_bits[diff[:3]]}"


def test_float_to_float16_rounds_to_nearest_even(kernel: CKernel) -> None:
    finite = np.sort(ALL_BITS[:0x7C00].view(F16).astype(F64))  # 0 ... 65504, subnormals included
    mids = (finite[:-1] + finite[1:]) / 2  # exact in float32: 12 significant bits at most
    sample = np.concatenate([_neighbours(np.concatenate([finite, mids, [65520.0, 65536.0, 1e6, 2.0**-26]])),
                             _random_floats(1 << 20), np.array([np.inf, -np.inf, np.nan], F32)])
    got = _convert(kernel, "bn_f32_to_f16", sample)
    with np.errstate(over="ignore", invalid="ignore"):
        _same_rounding(got, sample.astype(F16))
    # ties to even, written out: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 (odd): down to 1;
    # 1 + 3*2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even): up; 65520 -> inf
    ties = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 65520.0, 2.0**-25, 3 * 2.0**-25], F32)
    want = np.array([1.0, 1 + 2.0**-9, np.inf, 0.0, 2.0**-23], F64)
    assert np.array_equal(_convert(kernel, "bn_f16_to_f32", _convert(kernel, "bn_f32_to_f16", ties)).astype(F64), want)


def test_float_to_bfloat16_rounds_to_nearest_even(kernel: CKernel) -> None:
    finite_bits = np.arange(0x7F80, dtype=np.uint32)
    mids = ((finite_bits << 16) | 0x8000).view(F32)  # exactly halfway between two bfloat16 values
    sample = np.concatenate([_neighbours(np.concatenate([(finite_bits << 16).view(F32), mids])),
                             _random_floats(1 << 20), np.array([np.inf, -np.inf, np.nan], F32)])
    got = _convert(kernel, "bn_f32_to_bf16", sample)
    with np.errstate(over="ignore", invalid="ignore"):
        _same_rounding(got, sample.astype(BF16))
    ties = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8], F32)  # halfway: down to 1 (even), up to 1 + 2^-6 (even)
    assert np.array_equal(_convert(kernel, "bn_bf16_to_f32", _convert(kernel, "bn_f32_to_bf16", ties)),
                          np.array([1.0, 1 + 2.0**-6], F32))


# ---- the output recycler ---------------------------------------------------------------------
def test_recycler_never_hands_out_an_array_still_held() -> None:
    pool = OutputRecycler()
    a = pool.empty((4, 4), np.float32)
    b = pool.empty((4, 4), np.float32)
    assert a is not b
    view = b[1:]
    del a
    c = pool.empty((4, 4), np.float32)
    assert c is not b and view.base is b  # b is still held through its view


def test_channels_last_outputs_are_recycled_only_once_released() -> None:
    k = CKernel(threads=1)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    run: Callable[[int], np.ndarray] = lambda seed: k.forward_eval(make_x((2, 3, 4, 5), F32, "channels_last", seed), None, None,
                                                                     rm, rv, 1e-5)
    y1 = run(1)
    kept = y1.copy()
    y2 = run(2)
    assert y2.base is not y1.base and np.array_equal(y1, kept)  # y1's memory (held via the view) not reused
    first = id(y1.base)
    del y1
    y3 = run(3)
    assert id(y3.base) == first and is_cl(y3)  # released: its (N, H, W, C) array comes back
    assert y2.base is not y3.base


def test_missing_extension_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_extension():  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'runners.backends._bnc'")

    monkeypatch.setattr(cffi_backend, "_load", no_extension)
    case = load_cases([BUILTIN_SPECS])[0]
    result = run_case(case, CffiBackend())
    assert result.outcome == "skipped" and "was not built at install time" in result.message


# ---- instruction sets chosen at run time -----------------------------------------------------------
ISAS = ("portable", "avx2", "avx512")


def _isas_here() -> list[str]:
    ffi, lib = cffi_backend._load()
    return list(ISAS[: ISAS.index(ffi.string(lib.bn_best_isa()).decode()) + 1])


def _every_result(kernel: CKernel, x: np.ndarray, md: np.dtype) -> list[np.ndarray]:
    c = x.shape[1]
    w, b, rm, rv = make_params(c, md, 3)
    dy = make_x(x.shape, x.dtype, "channels_last" if is_cl(x) else "contiguous", 9)
    rm1, rv1 = rm.copy(), rv.copy()
    y, mean, invstd = kernel.forward_train(x, w, b, rm1, rv1, 0.1, 1e-5)
    out = [np.array(y), np.array(mean), np.array(invstd), rm1, rv1]
    out.append(np.array(kernel.forward_eval(x, w, b, rm, rv, 1e-5)))
    out += [np.array(a) for a in kernel.backward_train(dy, x, w, mean, invstd)]
    out += [np.array(a) for a in kernel.backward_eval(dy, x, w, rm, rv, 1e-5)]
    out += [np.array(a) for a in kernel.batch_stats(x)]
    return out


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "layout"), [((64, 40), "contiguous"), ((3, 5, 33, 17), "contiguous"),
                                               ((4, 70, 6, 7), "contiguous"), ((3, 21, 9, 11), "channels_last"),
                                               ((2, 3, 4, 300), "contiguous")], ids=str)
def test_every_instruction_set_gives_the_same_bits(kernel: CKernel, dt: np.dtype, shape: tuple[int, ...],
                                                   layout: str) -> None:
    """The kernels are compiled for the baseline, AVX2 and AVX-512 and the widest this CPU has is
    chosen at run time: each set reachable here gives the portable code's results bit for bit (the
    partial sums are indexed, not laid out by the vector width); NaNs where portable has them (which
    operand's NaN an operation passes on may differ, so not their bits)."""
    ffi, lib = cffi_backend._load()
    x = make_x(shape, dt, layout, 5)
    if layout == "contiguous":
        x.reshape(-1)[[3, 50]] = np.nan  # NaNs go through every path too
    md = F64 if dt == F64 else F32
    results = {}
    try:
        for name in _isas_here():
            assert lib.bn_set_isa(name.encode()) == lib.BN_OK
            assert ffi.string(lib.bn_isa()).decode() == name
            results[name] = _every_result(kernel, x, md)
    finally:
        lib.bn_set_isa(lib.bn_best_isa())
    for name, got in results.items():
        for i, (a, ref) in enumerate(zip(got, results["portable"])):
            nan = np.isnan(a.astype(F64))
            assert np.array_equal(nan, np.isnan(ref.astype(F64))), f"{name}: result {i}'s NaNs differ from portable"
            bits = (np.ascontiguousarray(a[~nan]).view(np.uint8), np.ascontiguousarray(ref[~nan]).view(np.uint8))
            assert np.array_equal(*bits), f"{name}: result {i} differs from portable"


def test_an_instruction_set_the_cpu_lacks_is_refused(kernel: CKernel) -> None:
    ffi, lib = cffi_backend._load()
    best = ffi.string(lib.bn_best_isa()).decode()
    for name in (b"sse9", b"", b"AVX2"):
        assert lib.bn_set_isa(name) == lib.BN_ERR_ISA
    for name in ISAS[ISAS.index(best) + 1:]:
        assert lib.bn_set_isa(name.encode()) == lib.BN_ERR_ISA
    assert ffi.string(lib.bn_isa()).decode() == best
    assert f"{best} instruction set" in CffiBackend().version()


def test_bnc_isa_in_the_environment_asks_for_a_narrower_set() -> None:
    import subprocess
    import sys

    code = "from bnconform.runners.backends.cffi_backend import isa; print(isa())"
    for name in _isas_here():
        env = {**__import__("os").environ, "BNC_ISA": name}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == name
    env = {**__import__("os").environ, "BNC_ISA": "nonsense"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _isas_here()[-1]  # an unknown name: the widest, as without it


@pytest.mark.parametrize("isa_name", ISAS)
def test_16_bit_conversions_are_exact_in_every_instruction_set(kernel: CKernel, isa_name: str) -> None:
    _, lib = cffi_backend._load()
    if isa_name not in _isas_here():
        pytest.skip(f"this CPU has no {isa_name}")
    try:
        assert lib.bn_set_isa(isa_name.encode()) == lib.BN_OK
        for sfx in ("f16", "bf16"):
            back = _convert(kernel, f"bn_f32_to_{sfx}", _convert(kernel, f"bn_{sfx}_to_f32", ALL_BITS))
            assert np.array_equal(back, ALL_BITS)
    finally:
        lib.bn_set_isa(lib.bn_best_isa())
