"""An independent BatchNorm in NumPy: a two-pass kernel plugged into KernelModule.

Statistics accumulate in float64 whatever the dtype (two passes: the mean, then the sum of
squared deviations), and results are rounded once to the module dtype.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Optional

import numpy as np

from runners.backends.kernel_module import KernelModule, kernel_capabilities
from runners.protocol import Array, ModuleConfig


def _axes(x: Array) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _bcast(v: Array, ndim: int) -> Array:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class NumpyKernel:
    """Functional BatchNorm in NumPy (see kernel_module.Kernel)."""

    def batch_stats(self, x: Array) -> tuple[Array, Array]:
        """Per-channel mean and biased variance, two-pass, float64."""
        xd = x.astype(np.float64)
        mean = xd.mean(axis=_axes(x))
        var = np.square(xd - _bcast(mean, x.ndim)).mean(axis=_axes(x))
        return mean, var

    def unbiased(self, var: Array, n: int) -> Array:
        return var * n / (n - 1)

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        n = x.size // x.shape[1]
        mean, var = self.batch_stats(x)
        invstd = 1.0 / np.sqrt(var + eps)
        if running_mean is not None and running_var is not None:
            running_mean[...] = (1 - factor) * running_mean + factor * mean
            running_var[...] = (1 - factor) * running_var + factor * self.unbiased(var, n)
        y = self._affine((x.astype(np.float64) - _bcast(mean, x.ndim)) * _bcast(invstd, x.ndim), weight, bias)
        return y.astype(x.dtype), mean, invstd

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        xhat = (x.astype(np.float64) - _bcast(running_mean.astype(np.float64), x.ndim)) * _bcast(invstd, x.ndim)
        return self._affine(xhat, weight, bias).astype(x.dtype)

    @staticmethod
    def _affine(xhat: Array, weight: Optional[Array], bias: Optional[Array]) -> Array:
        if weight is not None:
            xhat = xhat * _bcast(weight.astype(np.float64), xhat.ndim)
        if bias is not None:
            xhat = xhat + _bcast(bias.astype(np.float64), xhat.ndim)
        return xhat

    def backward_train(self, dy, x, weight, mean, invstd):
        n = x.size // x.shape[1]
        axes, nd = _axes(x), x.ndim
        dyd = dy.astype(np.float64)
        xhat = (x.astype(np.float64) - _bcast(mean, nd)) * _bcast(invstd, nd)
        sum_dy = dyd.sum(axis=axes)
        sum_dy_xhat = (dyd * xhat).sum(axis=axes)
        g = np.ones_like(invstd) if weight is None else weight.astype(np.float64)
        dx = _bcast(g * invstd / n, nd) * (n * dyd - _bcast(sum_dy, nd) - xhat * _bcast(sum_dy_xhat, nd))
        return dx.astype(x.dtype), sum_dy_xhat.astype(x.dtype), sum_dy.astype(x.dtype)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        axes, nd = _axes(x), x.ndim
        dyd = dy.astype(np.float64)
        invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        g = np.ones_like(invstd) if weight is None else weight.astype(np.float64)
        xhat = (x.astype(np.float64) - _bcast(running_mean.astype(np.float64), nd)) * _bcast(invstd, nd)
        dx = dyd * _bcast(g * invstd, nd)
        return dx.astype(x.dtype), (dyd * xhat).sum(axis=axes).astype(x.dtype), dyd.sum(axis=axes).astype(x.dtype)


class NumpyBackend:
    """KernelModule + a NumPy kernel. Pass another kernel to test a variant of it."""

    def __init__(self, kernel: Optional[NumpyKernel] = None, name: str = "numpy") -> None:
        self.kernel = kernel or NumpyKernel()
        self.name = name
        self.capabilities = kernel_capabilities(backward=True)

    def version(self) -> str:
        try:
            return f"numpy {version('numpy')}"
        except PackageNotFoundError:  # pragma: no cover - numpy is a dependency
            return f"numpy {np.__version__}"

    def create(self, config: ModuleConfig) -> KernelModule:
        return KernelModule(config, self.kernel)
