"""Deliberately broken NumPy backends, one realistic bug each, to prove the suite catches them.

Each is the real NumpyBackend with one kernel method replaced; load one with
`--backend tests.mutants:NAME` from the repository root.
"""
from __future__ import annotations

import numpy as np

from runners.backends.numpy_backend import NumpyBackend, NumpyKernel


class _BiasedRunningVar(NumpyKernel):
    def unbiased(self, var, n):  # Bessel's correction forgotten
        return var


class _OnePassVariance(NumpyKernel):
    def batch_stats(self, x, scratch):  # E[x^2] - E[x]^2 in the input dtype: cancels catastrophically
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=x.dtype)
        var = (x * x).mean(axis=axes, dtype=x.dtype) - mean * mean
        return mean.astype(np.float64), var.astype(np.float64)


biased_running_var = NumpyBackend(_BiasedRunningVar(), name="numpy-biased-running-var")
one_pass_variance = NumpyBackend(_OnePassVariance(), name="numpy-one-pass-variance")


class _NoBatchSizeCheck(NumpyBackend):
    """Forgets torch's "more than 1 value per channel" check (divides by n - 1 = 0 instead)."""

    def create(self, config):  # type: ignore[no-untyped-def]
        module = super().create(config)
        original = module.forward

        def forward(x):  # type: ignore[no-untyped-def]
            x = np.asarray(x)
            if x.ndim >= 2 and x.shape[0] * int(np.prod(x.shape[2:])) == 1:
                with np.errstate(all="ignore"):
                    return np.zeros_like(x)
            return original(x)

        module.forward = forward
        return module


no_batch_size_check = _NoBatchSizeCheck(name="numpy-no-batch-size-check")
