"""A BatchNorm kernel in plain NumPy, registered with bnconform as `example-numpy`.

Only the four kernel functions are written here; KernelModule gives them the full
nn.BatchNorm module semantics. Statistics are two-pass in float64.
"""
from __future__ import annotations

import numpy as np

from bnconform import KernelModule, kernel_capabilities


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _ch(v, ndim):
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _affine(xhat, weight, bias):
    if weight is not None:
        xhat = xhat * _ch(weight, xhat.ndim)
    if bias is not None:
        xhat = xhat + _ch(bias, xhat.ndim)
    return xhat


class ExampleKernel:
    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        xd = x.astype(np.float64)
        n = x.size // x.shape[1]
        mean = xd.mean(axis=_axes(x))
        var = ((xd - _ch(mean, x.ndim)) ** 2).mean(axis=_axes(x))
        if running_mean is not None:
            running_mean[...] = (1 - factor) * running_mean + factor * mean
            running_var[...] = (1 - factor) * running_var + factor * var * n / (n - 1)
        invstd = 1.0 / np.sqrt(var + eps)
        y = _affine((xd - _ch(mean, x.ndim)) * _ch(invstd, x.ndim), weight, bias)
        return y.astype(x.dtype), mean, invstd

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        xhat = (x.astype(np.float64) - _ch(running_mean, x.ndim)) * _ch(invstd, x.ndim)
        return _affine(xhat, weight, bias).astype(x.dtype)

    def backward_train(self, dy, x, weight, mean, invstd):
        n = x.size // x.shape[1]
        dyd = dy.astype(np.float64)
        xhat = (x.astype(np.float64) - _ch(mean, x.ndim)) * _ch(invstd, x.ndim)
        sum_dy, sum_dy_xhat = dyd.sum(axis=_axes(x)), (dyd * xhat).sum(axis=_axes(x))
        g = np.ones_like(invstd) if weight is None else weight.astype(np.float64)
        dx = _ch(g * invstd / n, x.ndim) * (n * dyd - _ch(sum_dy, x.ndim) - xhat * _ch(sum_dy_xhat, x.ndim))
        return dx.astype(x.dtype), sum_dy_xhat.astype(x.dtype), sum_dy.astype(x.dtype)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        dyd = dy.astype(np.float64)
        invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        g = np.ones_like(invstd) if weight is None else weight.astype(np.float64)
        xhat = (x.astype(np.float64) - _ch(running_mean, x.ndim)) * _ch(invstd, x.ndim)
        dx = dyd * _ch(g * invstd, x.ndim)
        return dx.astype(x.dtype), (dyd * xhat).sum(axis=_axes(x)).astype(x.dtype), dyd.sum(axis=_axes(x)).astype(x.dtype)


class ExampleBackend:
    name = "example-numpy"
    capabilities = kernel_capabilities(backward=True)

    def version(self) -> str:
        return "bnconform-example-plugin 0.1.0"

    def create(self, config):
        return KernelModule(config, ExampleKernel())


backend = ExampleBackend()
