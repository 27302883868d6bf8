"""The C backend: C99 kernels bound with cffi (API mode), plugged into KernelModule.

The extension (`runners.backends._bnc`) is compiled by `pip install`; if it is missing (no
compiler at install time), the backend reports that as its skip reason.

Data types: float16, bfloat16 (ml_dtypes), float32, float64, all native in C. Layouts:
C-contiguous and channels_last (memory (N, *spatial, C)), both native; any other strides are
refused (the caller copies to contiguous first).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import ml_dtypes
import numpy as np

from bnconform.runners.backends.kernel_module import KernelModule, OutputRecycler, kernel_capabilities
from bnconform.runners.backends.protocol import Array, ModuleConfig
from bnconform.runners.backends.threads import default_threads

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
HALF = frozenset({F16, BF16})
_SUFFIX = {F16: "f16", BF16: "bf16", F32: "f32", F64: "f64"}
# cffi knows no 16-bit float: 16-bit data cross as their bit patterns (uint16_t)
_CTYPE = {F16: "uint16_t[]", BF16: "uint16_t[]", F32: "float[]", F64: "double[]"}
DTYPE_NAMES = frozenset({"float16", "bfloat16", "float32", "float64"})


class CKernelError(RuntimeError):
    """A C entry point refused its arguments (the message names the function and the check)."""


def _load() -> tuple[Any, Any]:
    from bnconform.runners.backends import _bnc  # type: ignore[attr-defined]

    return _bnc.ffi, _bnc.lib


def _is_channels_last(x: Array) -> bool:
    """Memory (N, *spatial, C) and not plain C order (size-1 axes can make both hold: then the
    contiguous path is taken, the two index maps being the same)."""
    return x.ndim >= 3 and not x.flags.c_contiguous and bool(np.moveaxis(x, 1, -1).flags.c_contiguous)


def isa() -> str:
    """The instruction set the C kernels run with here (chosen at run time: portable, avx2, avx512)."""
    ffi, lib = _load()
    return str(ffi.string(lib.bn_isa()).decode())


class CKernel:
    """kernel_module.Kernel over the C entry points.

    Dtypes: `x` (and `dy`) in float16, bfloat16, float32 or float64; the per-channel arrays in the
    module's dtype: x's, or float32 for 16-bit x (mixed precision). The C code takes float32
    per-channel arrays for 16-bit data: other ones are converted for the call, and updated running
    buffers are written back into the caller's arrays, rounded to their dtype. y and dx have x's
    dtype; dweight/dbias the module's (`param_dtype`, else weight's, else float32 for 16-bit x,
    else x's).
    Layout: C-contiguous or channels_last x is taken as it is (no copy); y and dx have x's
    layout; dy in the other of these two layouts is copied into x's. Other strides: CKernelError.
    """

    channels_last = True  # channels_last arrays may be passed as they are
    native_dtypes = ("float16", "bfloat16", "float32", "float64")

    def __init__(self, threads: Optional[int] = None) -> None:
        self.ffi, self.lib = _load()
        self.threads = int(threads or default_threads())
        self.outputs = OutputRecycler()

    # -- dtypes and layouts -----------------------------------------------------------
    @staticmethod
    def _dtype(x: Array) -> np.dtype:
        if x.dtype not in _SUFFIX:
            raise CKernelError(f"unsupported dtype {x.dtype}: the C kernels take float16, bfloat16, float32 or float64")
        return x.dtype

    @staticmethod
    def _layout(x: Array, what: str = "input") -> int:
        """1 for channels_last, 0 for C-contiguous; anything else is refused."""
        if x.flags.c_contiguous:
            return 0
        if _is_channels_last(x):
            return 1
        raise CKernelError(f"strided {what}: expected C-contiguous or channels_last, got shape {x.shape} "
                           f"strides {x.strides}")

    @staticmethod
    def _in_layout(dy: Array, channels_last: int) -> Array:
        """dy in x's layout: as it is if it already is, else a copy (a strided dy is refused)."""
        CKernel._layout(dy, "grad_output")
        if channels_last:
            if np.moveaxis(dy, 1, -1).flags.c_contiguous:
                return dy
            return np.moveaxis(np.ascontiguousarray(np.moveaxis(dy, 1, -1)), -1, 1)
        return dy if dy.flags.c_contiguous else np.ascontiguousarray(dy)

    def _empty(self, x: Array, channels_last: int) -> Array:
        """An output like x (dtype and layout), from the recycler. For channels_last the pool
        holds the (N, *spatial, C) array and this hands out its moveaxis view: the view keeps a
        reference to it (its .base), so the pool sees it as taken while the view lives."""
        shape = (x.shape[0], *x.shape[2:], x.shape[1]) if channels_last else x.shape
        out = self.outputs.empty(shape, x.dtype)
        if out.dtype != x.dtype:  # the pool keys by dtype.str; bfloat16's ('<V2') is not unique to it
            out = np.empty(shape, x.dtype)
        return np.moveaxis(out, -1, 1) if channels_last else out

    @staticmethod
    def _chan_dtype(dt: np.dtype) -> np.dtype:
        """The C per-channel type for data of dtype dt."""
        return F32 if dt in HALF else dt

    def _chan(self, a: Optional[Array], dt: np.dtype) -> Optional[Array]:
        """A per-channel array as the C code takes it: the array itself when it already is (running
        buffers are then updated in place), else a contiguous float32 copy (16-bit data)."""
        if a is None:
            return None
        allowed = (dt, F32) if dt in HALF else (dt,)
        if a.dtype not in allowed:
            raise CKernelError(f"per-channel array of dtype {a.dtype} with {dt} input: expected "
                               f"{' or '.join(str(t) for t in allowed)}")
        return np.ascontiguousarray(a, self._chan_dtype(dt))

    @staticmethod
    def _write_back(*pairs: tuple[Optional[Array], Optional[Array]]) -> None:
        """Running buffers updated in a converted copy go back into the caller's arrays."""
        for own, used in pairs:
            if own is not None and used is not None and used is not own:
                own[...] = used

    @staticmethod
    def _grad_dtype(dt: np.dtype, weight: Optional[Array], param_dtype: Optional[np.dtype]) -> np.dtype:
        if param_dtype is not None:
            return np.dtype(param_dtype)
        if weight is not None:
            return weight.dtype
        return F32 if dt in HALF else dt

    # -- marshalling ------------------------------------------------------------------
    def _data(self, a: Array, dt: np.dtype, channels_last: int) -> Any:
        """x, y, dy or dx as a C pointer: a channels_last array through its (N, *spatial, C)
        C-contiguous view (the same memory), 16-bit data through a uint16 view."""
        if a.dtype != dt:
            raise CKernelError(f"expected {dt} data, got {a.dtype}")
        flat = np.moveaxis(a, 1, -1) if channels_last else a
        if not flat.flags.c_contiguous:  # _layout decided; a broken promise must not reach C
            raise CKernelError(f"strided input: expected C-contiguous or channels_last, got strides {a.strides}")
        if dt in HALF:
            flat = flat.view(np.uint16)
        return self.ffi.from_buffer(_CTYPE[dt], flat)

    def _ptr(self, a: Optional[Array]) -> Any:
        """A per-channel array (already through _chan) as a C pointer."""
        if a is None:
            return self.ffi.NULL
        return self.ffi.from_buffer(_CTYPE[a.dtype], a)

    def _f64(self, a: Array) -> Any:
        return self.ffi.from_buffer("double[]", a)

    def _call(self, name: str, dtype: np.dtype, *args: Any) -> None:
        fn = getattr(self.lib, f"{name}_{_SUFFIX[dtype]}")
        rc = fn(*args)
        if rc != self.lib.BN_OK:
            raise CKernelError(f"{name}_{_SUFFIX[dtype]}: {self.ffi.string(self.lib.bn_strerror(rc)).decode()} (code {rc})")

    @staticmethod
    def _c_len(c: int, *per_channel: Optional[Array]) -> int:
        """The one length of every per-channel buffer (C checks it against C); never a guess."""
        lengths = {a.size for a in per_channel if a is not None}
        if len(lengths) > 1:
            raise CKernelError(f"per-channel buffers of different lengths {sorted(lengths)}")
        return lengths.pop() if lengths else c

    @staticmethod
    def _same_shape(dy: Array, x: Array) -> None:
        if dy.shape != x.shape:  # same size but another layout would pass the C length check
            raise CKernelError(f"grad_output shape {dy.shape} differs from input shape {x.shape}")

    @staticmethod
    def _ncs(x: Array) -> tuple[int, int, int]:
        return x.shape[0], x.shape[1], math.prod(x.shape[2:])

    # -- the four kernels -------------------------------------------------------------
    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        dt, cl = self._dtype(x), self._layout(x)
        n, c, s = self._ncs(x)
        w, b, rm, rv = (self._chan(a, dt) for a in (weight, bias, running_mean, running_var))
        c_len = self._c_len(c, w, b, rm, rv)
        y = self._empty(x, cl)
        mean, invstd = np.empty(c_len), np.empty(c_len)
        self._call("bn_forward_train", dt, self._data(x, dt, cl), x.size, self._data(y, dt, cl), y.size, n, c, s, cl,
                   self._ptr(w), self._ptr(b), self._ptr(rm), self._ptr(rv),
                   c_len, float(factor), float(eps), self._f64(mean), self._f64(invstd), self.threads)
        self._write_back((running_mean, rm), (running_var, rv))
        return y, mean, invstd

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        dt, cl = self._dtype(x), self._layout(x)
        n, c, s = self._ncs(x)
        w, b, rm, rv = (self._chan(a, dt) for a in (weight, bias, running_mean, running_var))
        c_len = self._c_len(c, w, b, rm, rv)
        y = self._empty(x, cl)
        self._call("bn_forward_eval", dt, self._data(x, dt, cl), x.size, self._data(y, dt, cl), y.size, n, c, s, cl,
                   self._ptr(w), self._ptr(b), self._ptr(rm), self._ptr(rv), c_len, float(eps), self.threads)
        return y

    def backward_train(self, dy, x, weight, mean, invstd, *, param_dtype: Optional[np.dtype] = None):
        dt, cl = self._dtype(x), self._layout(x)
        n, c, s = self._ncs(x)
        self._same_shape(dy, x)
        dy = self._in_layout(dy, cl)
        w = self._chan(weight, dt)
        mean, invstd = np.ascontiguousarray(mean, np.float64), np.ascontiguousarray(invstd, np.float64)
        c_len = self._c_len(c, w, mean, invstd)
        pt = self._chan_dtype(dt)
        dx, dw, db = self._empty(x, cl), np.empty(c_len, pt), np.empty(c_len, pt)
        self._call("bn_backward_train", dt, self._data(dy, dt, cl), dy.size, self._data(x, dt, cl), self._data(dx, dt, cl),
                   x.size, n, c, s, cl, self._ptr(w), self._f64(mean), self._f64(invstd), self._ptr(dw), self._ptr(db),
                   c_len, self.threads)
        gt = self._grad_dtype(dt, weight, param_dtype)
        return dx, dw.astype(gt, copy=False), db.astype(gt, copy=False)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps, *, param_dtype: Optional[np.dtype] = None):
        dt, cl = self._dtype(x), self._layout(x)
        n, c, s = self._ncs(x)
        self._same_shape(dy, x)
        dy = self._in_layout(dy, cl)
        w, rm, rv = (self._chan(a, dt) for a in (weight, running_mean, running_var))
        c_len = self._c_len(c, w, rm, rv)
        pt = self._chan_dtype(dt)
        dx, dw, db = self._empty(x, cl), np.empty(c_len, pt), np.empty(c_len, pt)
        self._call("bn_backward_eval", dt, self._data(dy, dt, cl), dy.size, self._data(x, dt, cl), self._data(dx, dt, cl),
                   x.size, n, c, s, cl, self._ptr(w), self._ptr(rm), self._ptr(rv), float(eps),
                   self._ptr(dw), self._ptr(db), c_len, self.threads)
        gt = self._grad_dtype(dt, weight, param_dtype)
        return dx, dw.astype(gt, copy=False), db.astype(gt, copy=False)

    # -- statistics only --------------------------------------------------------------
    def batch_stats(self, x: Array) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and biased variance of x (float64), for combining shards of a batch."""
        dt, cl = self._dtype(x), self._layout(x)
        n, c, s = self._ncs(x)
        mean, var = np.empty(c), np.empty(c)
        self._call("bn_batch_stats", dt, self._data(x, dt, cl), x.size, n, c, s, cl, self._f64(mean), self._f64(var),
                   c, self.threads)
        return mean, var


class CffiBackend:
    """KernelModule + CKernel; `threads` defaults to torch's thread count."""

    def __init__(self, threads: Optional[int] = None, name: str = "cffi") -> None:
        self.name = name
        self.threads = threads
        self.capabilities = kernel_capabilities(backward=True, shards=True, dtypes=DTYPE_NAMES)
        self._kernel: Optional[CKernel] = None

    def available(self) -> Optional[str]:
        try:
            _load()
        except ImportError as exc:
            return f"the C extension runners.backends._bnc was not built at install time ({exc}); reinstall with a C compiler"
        return None

    def kernel(self) -> CKernel:
        if self._kernel is None:
            self._kernel = CKernel(self.threads)
        return self._kernel

    def version(self) -> str:
        reason = self.available()
        if reason:
            return "not built"
        _, lib = _load()
        return (f"bnc (C99, cffi API mode, OpenMP {'on' if lib.bn_openmp_enabled() else 'off'}, "
                f"{self.kernel().threads} threads, {isa()} instruction set)")

    def create(self, config: ModuleConfig) -> KernelModule:
        return KernelModule(config, self.kernel())
