"""The C backend: C99 kernels bound with cffi (API mode), plugged into KernelModule.

The extension (`runners.backends._bnc`) is compiled by `pip install`; if it is missing (no
compiler at install time), the backend reports that as its skip reason.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.kernel_module import KernelModule, OutputRecycler, default_threads, kernel_capabilities
from bnconform.runners.backends.protocol import Array, ModuleConfig

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_CTYPE = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]"}


class CKernelError(RuntimeError):
    """A C entry point refused its arguments (the message names the function and the check)."""


def _load() -> tuple[Any, Any]:
    from bnconform.runners.backends import _bnc  # type: ignore[attr-defined]

    return _bnc.ffi, _bnc.lib


class CKernel:
    """kernel_module.Kernel over the C entry points."""

    def __init__(self, threads: Optional[int] = None) -> None:
        self.ffi, self.lib = _load()
        self.threads = int(threads or default_threads())
        self.outputs = OutputRecycler()

    # -- marshalling ------------------------------------------------------------------
    def _ptr(self, a: Optional[Array], dtype: np.dtype) -> Any:
        if a is None:
            return self.ffi.NULL
        if a.dtype != dtype or not a.flags.c_contiguous:
            raise CKernelError(f"expected a contiguous {dtype} array, got {a.dtype} {'C' if a.flags.c_contiguous else 'strided'}")
        return self.ffi.from_buffer(_CTYPE[dtype], a)

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
        dt = x.dtype
        n, c, s = self._ncs(x)
        c_len = self._c_len(c, weight, bias, running_mean, running_var)
        y = self.outputs.empty(x.shape, dt)
        mean, invstd = np.empty(c_len), np.empty(c_len)
        self._call("bn_forward_train", dt, self._ptr(x, dt), x.size, self._ptr(y, dt), y.size, n, c, s,
                   self._ptr(weight, dt), self._ptr(bias, dt), self._ptr(running_mean, dt), self._ptr(running_var, dt),
                   c_len, float(factor), float(eps), self._f64(mean), self._f64(invstd), self.threads)
        return y, mean, invstd

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        dt = x.dtype
        n, c, s = self._ncs(x)
        c_len = self._c_len(c, weight, bias, running_mean, running_var)
        y = self.outputs.empty(x.shape, dt)
        self._call("bn_forward_eval", dt, self._ptr(x, dt), x.size, self._ptr(y, dt), y.size, n, c, s,
                   self._ptr(weight, dt), self._ptr(bias, dt), self._ptr(running_mean, dt), self._ptr(running_var, dt),
                   c_len, float(eps), self.threads)
        return y

    def backward_train(self, dy, x, weight, mean, invstd):
        dt = x.dtype
        n, c, s = self._ncs(x)
        mean, invstd = np.ascontiguousarray(mean, np.float64), np.ascontiguousarray(invstd, np.float64)
        c_len = self._c_len(c, weight, mean, invstd)
        self._same_shape(dy, x)
        dx, dw, db = self.outputs.empty(x.shape, dt), np.empty(c_len, dt), np.empty(c_len, dt)
        self._call("bn_backward_train", dt, self._ptr(dy, dt), dy.size, self._ptr(x, dt), self._ptr(dx, dt), x.size, n, c, s,
                   self._ptr(weight, dt), self._f64(mean), self._f64(invstd), self._ptr(dw, dt), self._ptr(db, dt),
                   c_len, self.threads)
        return dx, dw, db

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        dt = x.dtype
        n, c, s = self._ncs(x)
        c_len = self._c_len(c, weight, running_mean, running_var)
        self._same_shape(dy, x)
        dx, dw, db = self.outputs.empty(x.shape, dt), np.empty(c_len, dt), np.empty(c_len, dt)
        self._call("bn_backward_eval", dt, self._ptr(dy, dt), dy.size, self._ptr(x, dt), self._ptr(dx, dt), x.size, n, c, s,
                   self._ptr(weight, dt), self._ptr(running_mean, dt), self._ptr(running_var, dt), float(eps),
                   self._ptr(dw, dt), self._ptr(db, dt), c_len, self.threads)
        return dx, dw, db


class CffiBackend:
    """KernelModule + CKernel; `threads` defaults to torch's thread count."""

    def __init__(self, threads: Optional[int] = None, name: str = "cffi") -> None:
        self.name = name
        self.threads = threads
        self.capabilities = kernel_capabilities(backward=True)
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
        return f"bnc (C99, cffi API mode, OpenMP {'on' if lib.bn_openmp_enabled() else 'off'}, {self.kernel().threads} threads)"

    def create(self, config: ModuleConfig) -> KernelModule:
        return KernelModule(config, self.kernel())
