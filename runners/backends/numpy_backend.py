"""An independent BatchNorm in NumPy: a kernel plugged into KernelModule.

Statistics are exact enough for any offset: per (n, c) plane a rough mean k is taken first,
then the sums of d = x - k and d*d (small numbers, accumulated in float64), and planes are
merged per channel in float64 with Chan's formula. Small planes
(e.g. (N, C) input) are reduced over n first instead, in float64 (a sequential reduction: the
shapes library's 65536 x 3 x 1 x 1 showed float32 losing 1e-4 of the mean there). Element-wise work is done in the
module dtype, in place in the output buffer, to keep the number of passes over memory low:
the backend stays within a few times torch's speed while sharing no code with it or the oracle.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Optional

import numpy as np

from bnconform.runners.backends.kernel_module import KernelModule, OutputRecycler, kernel_capabilities
from bnconform.runners.backends.protocol import Array, ModuleConfig
from bnconform.runners.backends.threads import default_threads

PLANE_MIN = 64  # planes at least this long are reduced plane by plane


def _ncs(x: Array) -> tuple[int, int, int]:
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


EXPAND_MAX = 1 << 20  # C*S up to which per-channel vectors are expanded to every position


def _rows(a: Array, n: int, c: int, s: int) -> Array:
    """The view element-wise work runs on: (N, C*S) rows, or (N, C, S) for very wide rows."""
    return a.reshape(n, c * s) if c * s <= EXPAND_MAX else a.reshape(n, c, s)


def _per_channel(v: Array, dtype: np.dtype, c: int, s: int) -> Array:
    """A per-channel vector shaped to broadcast against _rows(): repeated over the S positions
    when rows are (N, C*S), so NumPy's inner loops run over whole rows, not S values at a time."""
    v = np.asarray(v, dtype=dtype)
    return np.repeat(v, s).reshape(1, c * s) if c * s <= EXPAND_MAX else v.reshape(1, c, 1)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _variance(m2: Array, count: int, dtype: np.dtype) -> Array:
    """The biased variance from the sum of squared deviations. As torch does, data of at most
    float32's width has that sum in float32: past its largest value the variance is +inf."""
    m2 = np.maximum(m2, 0.0)
    if dtype.itemsize <= 4:
        m2 = np.where(m2 > _FLOAT32_MAX, np.inf, m2)
    return m2 / count


class NumpyKernel:
    """Functional BatchNorm in NumPy (see kernel_module.Kernel).

    NumPy's ufuncs release the GIL, so large tensors are cut along their first axis into one
    chunk per thread (`threads`, default torch's count, the same as every other backend).
    """

    PARALLEL_MIN = 1 << 20  # elements below which one thread is faster (measured: thread hand-off ~20 us)

    def __init__(self, threads: Optional[int] = None) -> None:
        self.outputs = OutputRecycler()
        self.threads = int(threads or default_threads())
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bnc-numpy") if self.threads > 1 else None

    def _each(self, rows: int, row_size: int, fn: Callable[[int, int], Any]) -> list[Any]:
        """fn(lo, hi) over chunks of range(rows): one chunk per thread when the work is large."""
        if self._pool is None or rows < 2 or rows * row_size < self.PARALLEL_MIN:
            return [fn(0, rows)]
        k = min(self.threads, rows)
        bounds = [rows * i // k for i in range(k + 1)]
        return list(self._pool.map(lambda b: fn(*b), zip(bounds[:-1], bounds[1:])))

    # -- statistics -------------------------------------------------------------------
    def batch_stats(self, x: Array, scratch: Optional[Array] = None) -> tuple[Array, Array]:
        """Per-channel mean and biased variance (float64). `scratch` (x's shape) is overwritten."""
        if scratch is None:
            scratch = np.empty_like(x)
        n, c, s = _ncs(x)
        if s >= PLANE_MIN:
            x2, d = x.reshape(n * c, s), scratch.reshape(n * c, s)

            def planes(lo: int, hi: int) -> tuple[Array, Array, Array]:
                # float64 sums: in float32, 2^20 values at 1e6 put the shift 3 off the mean, and the
                # squares of 2^20 deviations lose 1e-4 of the variance (the full tier showed both)
                k = (np.einsum("ij->i", x2[lo:hi], dtype=np.float64) / s).astype(x.dtype)  # the shift
                np.subtract(x2[lo:hi], k[:, None], out=d[lo:hi])
                return (k, np.einsum("ij->i", d[lo:hi], dtype=np.float64),
                        np.einsum("ij,ij->i", d[lo:hi], d[lo:hi], dtype=np.float64))

            parts = self._each(n * c, s, planes)
            k, s1, s2 = (np.concatenate([p[i] for p in parts]).astype(np.float64) for i in range(3))
            plane_mean = (k + s1 / s).reshape(n, c)
            plane_m2 = (s2 - s1 * s1 / s).reshape(n, c)
            mean = plane_mean.mean(axis=0)
            m2 = plane_m2.sum(axis=0) + s * np.square(plane_mean - mean).sum(axis=0)  # Chan
            return mean, _variance(m2, n * s, x.dtype)
        # Small planes: per position (c, s) over n, shifted by the first row, then Chan per channel.
        rows, d = x.reshape(n, c * s), scratch.reshape(n, c * s)

        def chunk(lo: int, hi: int) -> tuple[Array, Array]:
            # Summed over n, a sequential reduction (NumPy sums pairwise only along the contiguous
            # axis): accumulated in float64, or 65536 float32 rows lose 1e-4 of the mean.
            np.subtract(rows[lo:hi], rows[0], out=d[lo:hi])
            return (np.add.reduce(d[lo:hi], axis=0, dtype=np.float64),
                    np.einsum("ij,ij->j", d[lo:hi], d[lo:hi], dtype=np.float64))

        parts = self._each(n, c * s, chunk)
        s1 = sum(p[0].astype(np.float64) for p in parts)
        s2 = sum(p[1].astype(np.float64) for p in parts)
        pos_mean = (rows[0] + s1 / n).reshape(c, s)
        pos_m2 = (s2 - s1 * s1 / n).reshape(c, s)
        mean = pos_mean.mean(axis=1)
        m2 = pos_m2.sum(axis=1) + n * np.square(pos_mean - mean[:, None]).sum(axis=1)
        return mean, _variance(m2, n * s, x.dtype)

    def unbiased(self, var: Array, n: int) -> Array:
        """The variance the running buffer takes (Bessel's correction)."""
        return var * n / (n - 1)

    def normalising_var(self, var: Array, n: int) -> Array:
        """The variance the output is normalised with: the biased one."""
        return var

    def invstd(self, var: Array, eps: float) -> Array:
        """1/sqrt(var + eps), eps inside the root (float64)."""
        return 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)

    # -- forward ----------------------------------------------------------------------
    def _normalise(self, x: Array, y: Array, mean: Array, scale: Array, bias: Optional[Array]) -> Array:
        """y = (x - mean) * scale + bias, per channel, in x's dtype, written into y.

        Two passes: the bias folds into the centre, y = (x - (mean - bias/scale)) * scale, which
        keeps the subtraction first (no cancellation for offset data); three if a scale is 0.
        """
        n, c, s = _ncs(x)
        x3, y3 = _rows(x, n, c, s), _rows(y, n, c, s)
        scale = np.asarray(scale, dtype=np.float64)
        fold = bias is not None and bool(np.all(scale != 0))
        centre = np.asarray(mean, np.float64) - (bias / scale if fold else 0.0)
        centre, scale_t = _per_channel(centre, x.dtype, c, s), _per_channel(scale, x.dtype, c, s)
        bias_t = None if bias is None or fold else _per_channel(bias, x.dtype, c, s)

        def chunk(lo: int, hi: int) -> None:
            np.subtract(x3[lo:hi], centre, out=y3[lo:hi])
            np.multiply(y3[lo:hi], scale_t, out=y3[lo:hi])
            if bias_t is not None:
                np.add(y3[lo:hi], bias_t, out=y3[lo:hi])

        self._each(n, c * s, chunk)
        return y

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        n, _, s = _ncs(x)
        y = self.outputs.empty(x.shape, x.dtype)
        mean, var = self.batch_stats(x, scratch=y)
        invstd = self.invstd(self.normalising_var(var, n * s), eps)
        if running_mean is not None and running_var is not None:
            running_mean[...] = (1 - factor) * running_mean + factor * mean
            running_var[...] = (1 - factor) * running_var + factor * self.unbiased(var, n * s)
        scale = invstd if weight is None else invstd * weight
        return self._normalise(x, y, mean, scale, bias), mean, invstd

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        invstd = self.invstd(running_var, eps)
        scale = invstd if weight is None else invstd * weight
        return self._normalise(x, self.outputs.empty(x.shape, x.dtype), running_mean, scale, bias)

    # -- backward ---------------------------------------------------------------------
    def _sums(self, dy: Array, xc: Array) -> tuple[Array, Array]:
        """Per-channel sum(dy) and sum(dy * xc), plane sums in the dtype, merged in float64."""
        n, c, s = _ncs(dy)
        if s >= PLANE_MIN:
            g2, p2 = dy.reshape(n * c, s), xc.reshape(n * c, s)
            # float64 sums: a float32 plane sum of 16384 gradients loses 1e-4 of a small total
            parts = self._each(n * c, s, lambda lo, hi: (np.einsum("ij->i", g2[lo:hi], dtype=np.float64),
                                                        np.einsum("ij,ij->i", g2[lo:hi], p2[lo:hi], dtype=np.float64)))
            s1, s2 = (np.concatenate([p[i] for p in parts]).astype(np.float64).reshape(n, c).sum(axis=0) for i in range(2))
            return s1, s2
        g2, p2 = dy.reshape(n, c * s), xc.reshape(n, c * s)
        parts = self._each(n, c * s, lambda lo, hi: (np.add.reduce(g2[lo:hi], axis=0, dtype=np.float64),
                                                    np.einsum("ij,ij->j", g2[lo:hi], p2[lo:hi], dtype=np.float64)))
        s1 = sum(p[0] for p in parts).reshape(c, s).sum(axis=1)
        s2 = sum(p[1].astype(np.float64) for p in parts).reshape(c, s).sum(axis=1)
        return s1, s2

    def backward_train(self, dy, x, weight, mean, invstd):
        n, c, s = _ncs(x)
        count = n * s
        dx = self.outputs.empty(x.shape, x.dtype)
        x3, dy3, xc = _rows(x, n, c, s), _rows(dy, n, c, s), _rows(dx, n, c, s)
        m_t = _per_channel(mean, x.dtype, c, s)
        self._each(n, c * s, lambda lo, hi: np.subtract(x3[lo:hi], m_t, out=xc[lo:hi]))
        sum_dy, sum_dy_xc = self._sums(dy, xc)
        sum_dy_xhat = sum_dy_xc * invstd
        g = np.ones(c) if weight is None else weight.astype(np.float64)
        # dx = g*invstd*(dy - sum_dy/n - xhat*sum_dy_xhat/n), xhat = xc*invstd
        k1 = _per_channel(g * invstd, x.dtype, c, s)
        k2 = _per_channel(-g * invstd * invstd * sum_dy_xhat / count, x.dtype, c, s)
        k3 = _per_channel(-g * invstd * sum_dy / count, x.dtype, c, s)
        tmp = _rows(self.outputs.empty(x.shape, x.dtype), n, c, s)

        def chunk(lo: int, hi: int) -> None:
            np.multiply(xc[lo:hi], k2, out=xc[lo:hi])
            np.add(xc[lo:hi], k3, out=xc[lo:hi])
            np.multiply(dy3[lo:hi], k1, out=tmp[lo:hi])
            np.add(xc[lo:hi], tmp[lo:hi], out=xc[lo:hi])

        self._each(n, c * s, chunk)
        return dx, sum_dy_xhat.astype(x.dtype), sum_dy.astype(x.dtype)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        n, c, s = _ncs(x)
        invstd = self.invstd(running_var, eps)
        g = np.ones(c) if weight is None else weight.astype(np.float64)
        dx = self.outputs.empty(x.shape, x.dtype)
        x3, dy3, out = _rows(x, n, c, s), _rows(dy, n, c, s), _rows(dx, n, c, s)
        rm_t, k_t = _per_channel(running_mean, x.dtype, c, s), _per_channel(g * invstd, x.dtype, c, s)
        self._each(n, c * s, lambda lo, hi: np.subtract(x3[lo:hi], rm_t, out=out[lo:hi]))
        sum_dy, sum_dy_xc = self._sums(dy, out)
        self._each(n, c * s, lambda lo, hi: np.multiply(dy3[lo:hi], k_t, out=out[lo:hi]))
        return dx, (sum_dy_xc * invstd).astype(x.dtype), sum_dy.astype(x.dtype)


class NumpyBackend:
    """KernelModule + a NumPy kernel. Pass another kernel to test a variant of it."""

    def __init__(self, kernel: Optional[NumpyKernel] = None, name: str = "numpy", threads: Optional[int] = None) -> None:
        self._kernel = kernel
        self.threads = threads
        self.name = name
        self.capabilities = kernel_capabilities(backward=True, shards=True)

    @property
    def kernel(self) -> NumpyKernel:
        if self._kernel is None:
            self._kernel = NumpyKernel(self.threads)
        return self._kernel

    def version(self) -> str:
        try:
            return f"numpy {version('numpy')}"
        except PackageNotFoundError:  # pragma: no cover - numpy is a dependency
            return f"numpy {np.__version__}"

    def create(self, config: ModuleConfig) -> KernelModule:
        return KernelModule(config, self.kernel)
