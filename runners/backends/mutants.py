"""Deliberately broken BatchNorm backends: one realistic bug each, to prove the suite catches it.

Each mutant is the real NumPy backend with one piece replaced (a kernel method, or a module
method of KernelModule). `CAUSE` maps each to the deviation (cases/deviations.py) that
describes its bug, or None where the oracle has no switch for it. Load one with
`--backend bnconform.runners.backends.mutants:NAME`; score them all with `bnconform mutants`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from bnconform.runners.backends.kernel_module import KernelModule
from bnconform.runners.backends.numpy_backend import NumpyBackend, NumpyKernel
from bnconform.runners.backends.protocol import PROFILES


def _backend(name: str, kernel: Optional[NumpyKernel] = None, module: type = KernelModule) -> NumpyBackend:
    """A NumPy backend whose kernel and/or module class is a mutant."""

    class Mutant(NumpyBackend):
        def create(self, config):
            return module(config, self.kernel)

    return Mutant(kernel or NumpyKernel(threads=1), name=f"mutant-{name}")


# -- kernel bugs ------------------------------------------------------------------------
class _BiasedRunningVar(NumpyKernel):
    def unbiased(self, var, n):  # Bessel's correction forgotten
        return var


class _OnePassVariance(NumpyKernel):
    def batch_stats(self, x, scratch):  # E[x^2] - E[x]^2 in the input dtype: cancels catastrophically
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=x.dtype)
        var = (x * x).mean(axis=axes, dtype=x.dtype) - mean * mean
        return mean.astype(np.float64), var.astype(np.float64)


class _EpsOutsideSqrt(NumpyKernel):
    def invstd(self, var, eps):
        return 1.0 / (np.sqrt(np.asarray(var, np.float64)) + eps)


class _EpsOmitted(NumpyKernel):
    def invstd(self, var, eps):
        with np.errstate(divide="ignore"):
            return 1.0 / np.sqrt(np.asarray(var, np.float64))


class _NormaliseUnbiased(NumpyKernel):
    def normalising_var(self, var, n):  # the unbiased variance used for the output too
        return var * n / (n - 1) if n > 1 else var


class _PerPositionStats(NumpyKernel):
    """x.mean(axis=0) where (0, 2, 3) was meant: statistics per position, over N only."""

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        xd = x.astype(np.float64)
        mean = xd.mean(axis=0, keepdims=True)
        var = ((xd - mean) ** 2).mean(axis=0, keepdims=True)
        n = x.shape[0]
        if running_mean is not None:
            c = x.shape[1]
            running_mean[...] = (1 - factor) * running_mean + factor * mean.reshape(c, -1).mean(axis=1)
            unbiased = (var * n / max(n - 1, 1)).reshape(c, -1).mean(axis=1)
            running_var[...] = (1 - factor) * running_var + factor * unbiased
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (xd - mean) / np.sqrt(var + eps)
        if weight is not None:
            y = y * weight.reshape(shape) + bias.reshape(shape)
        channel_mean = mean.reshape(x.shape[1], -1).mean(axis=1)
        return y.astype(x.dtype), channel_mean, 1.0 / np.sqrt(var.reshape(x.shape[1], -1).mean(axis=1) + eps)


class _GradStatsConstant(NumpyKernel):
    def backward_train(self, dy, x, weight, mean, invstd):  # forgets the paths through mean and var
        _dx, dw, db = super().backward_train(dy, x, weight, mean, invstd)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        g = np.ones_like(invstd) if weight is None else weight.astype(np.float64)
        return (dy * (g * invstd).reshape(shape)).astype(x.dtype), dw, db


class _GradWeightSumDy(NumpyKernel):
    def backward_train(self, dy, x, weight, mean, invstd):
        dx, _dw, db = super().backward_train(dy, x, weight, mean, invstd)
        return dx, db.copy(), db

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        dx, _dw, db = super().backward_eval(dy, x, weight, running_mean, running_var, eps)
        return dx, db.copy(), db


class _AffineIgnored(NumpyKernel):
    """The scale and shift never reach the output (nor the gradients)."""

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        return super().forward_train(x, None, None, running_mean, running_var, factor, eps)

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        return super().forward_eval(x, None, None, running_mean, running_var, eps)

    def backward_train(self, dy, x, weight, mean, invstd):
        dx, dw, db = super().backward_train(dy, x, None, mean, invstd)
        return dx, np.zeros_like(dw), np.zeros_like(db)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        dx, dw, db = super().backward_eval(dy, x, None, running_mean, running_var, eps)
        return dx, np.zeros_like(dw), np.zeros_like(db)


class _AffineBiasScaled(NumpyKernel):
    """(xhat + bias) * weight: the shift applied before the scale."""

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        return super().forward_train(x, weight, None if bias is None else bias * weight, running_mean, running_var, factor, eps)

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        return super().forward_eval(x, weight, None if bias is None else bias * weight, running_mean, running_var, eps)


class _Float32Accumulation(NumpyKernel):
    """float64 modules computed through float32 (a silent downcast): no deviation describes it."""

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        if x.dtype != np.float64:
            return super().forward_train(x, weight, bias, running_mean, running_var, factor, eps)
        f = np.float32
        rm = None if running_mean is None else running_mean.astype(f)
        rv = None if running_var is None else running_var.astype(f)
        y, mean, invstd = super().forward_train(x.astype(f), None if weight is None else weight.astype(f),
                                                None if bias is None else bias.astype(f), rm, rv, factor, eps)
        if running_mean is not None:
            running_mean[...], running_var[...] = rm, rv
        return y.astype(np.float64), mean, invstd


# -- module bugs ------------------------------------------------------------------------
class _MomentumInverted(KernelModule):
    def _new_batch_weight(self):  # momentum read as the weight of the old value
        return None if self.momentum is None else 1.0 - self.momentum


class _MomentumNoneAsDefault(KernelModule):
    def _new_batch_weight(self):  # `momentum or 0.1`
        return 0.1 if self.momentum is None else self.momentum


class _CumulativeOffByOne(KernelModule):
    def _count_batch(self, m):
        nbt = self.buffers["num_batches_tracked"]
        assert nbt is not None  # forward counts only when the counter exists
        nbt += 1
        return 1.0 / (float(nbt) + 1.0) if m is None else m  # counts the batch twice


class _CounterNotIncremented(KernelModule):
    def _count_batch(self, m):
        nbt = self.buffers["num_batches_tracked"]
        assert nbt is not None  # forward counts only when the counter exists
        return 1.0 / max(float(nbt), 1.0) if m is None else m


class _CounterIncrementedInEval(KernelModule):
    def forward(self, x):
        nbt = self.buffers["num_batches_tracked"]
        if not self.training and self.track_running_stats and nbt is not None:
            nbt += 1
        return super().forward(x)


class _UpdateInEval(KernelModule):
    def forward(self, x):
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        if not self.training and rm is not None and math.prod(np.shape(x)[2:]) * np.shape(x)[0] > 1:
            m = self._new_batch_weight()
            self.kernel.forward_train(np.ascontiguousarray(x, self.dtype), None, None, rm, rv, 0.0 if m is None else m, self.eps)
        return super().forward(x)


class _BatchStatsInEval(KernelModule):
    def _plan(self):
        _batch_stats, rm, rv = super()._plan()
        return (True, rm if self.training else None, rv if self.training else None)


class _LegacyToggling(KernelModule):
    def _plan(self):  # PyTorch 1.1-1.5: `training or not track_running_stats`, buffers always passed
        batch_stats = self.training or not self.track_running_stats
        if not batch_stats and self.buffers["running_mean"] is None:
            raise RuntimeError("running_mean must be defined in evaluation mode")
        return (batch_stats, self.buffers["running_mean"], self.buffers["running_var"])


class _FlipIgnored(KernelModule):
    def set_attribute(self, name, value):
        if name != "track_running_stats":
            super().set_attribute(name, value)


class _RunningVarInitZero(KernelModule):
    def __init__(self, config, kernel):
        super().__init__(config, kernel)
        if self.buffers["running_var"] is not None:
            self.buffers["running_var"][...] = 0

    def reset_running_stats(self):
        super().reset_running_stats()
        if self.track_running_stats and self.buffers["running_var"] is not None:
            self.buffers["running_var"][...] = 0


class _ResetNoop(KernelModule):
    def reset_running_stats(self):
        pass


class _StateDictWithoutCounter(KernelModule):
    def state_dict(self):
        out = super().state_dict()
        out.pop("num_batches_tracked", None)
        return out


class _LoadIgnoresCounter(KernelModule):
    def load_state_dict(self, state, strict=True):
        nbt = self.get("num_batches_tracked")
        super().load_state_dict(state, strict)
        if nbt is not None:
            counter = self.buffers["num_batches_tracked"]
            assert counter is not None  # it had a value before the load, and loading keeps the buffer
            counter[...] = nbt


class _UntrackedHasBuffers(KernelModule):
    def __init__(self, config, kernel):
        super().__init__(config, kernel)
        c = config.num_features
        if self.buffers["running_mean"] is None:
            self.buffers = {"running_mean": np.zeros(c, self.dtype), "running_var": np.ones(c, self.dtype),
                            "num_batches_tracked": np.zeros((), np.int64)}


class _NoBatchSizeCheck(KernelModule):
    def forward(self, x):  # one value per channel: returns zeros instead of raising
        x = np.asarray(x)
        if x.ndim >= 2 and x.shape[0] * math.prod(x.shape[2:]) == 1 and (self.training or self.buffers["running_mean"] is None):
            return np.zeros_like(x, dtype=self.dtype)
        return super().forward(x)


class _GradBiasMissing(KernelModule):
    def backward(self, grad_output):
        grads = super().backward(grad_output)
        grads["bias"] = None
        return grads


CAUSE: dict[str, Optional[str]] = {}


def _register(name: str, cause: Optional[str], **kw) -> NumpyBackend:
    CAUSE[name] = cause
    return _backend(name, **kw)


biased_running_var = _register("biased_running_var", "biased_running_var", kernel=_BiasedRunningVar(threads=1))
one_pass_variance = _register("one_pass_variance", "one_pass_variance", kernel=_OnePassVariance(threads=1))
eps_outside_sqrt = _register("eps_outside_sqrt", "eps_outside_sqrt", kernel=_EpsOutsideSqrt(threads=1))
eps_omitted = _register("eps_omitted", "eps_omitted", kernel=_EpsOmitted(threads=1))
normalise_unbiased = _register("normalise_unbiased", "normalise_unbiased", kernel=_NormaliseUnbiased(threads=1))
per_position_stats = _register("per_position_stats", "per_position_stats", kernel=_PerPositionStats(threads=1))
grad_stats_constant = _register("grad_stats_constant", "grad_stats_constant", kernel=_GradStatsConstant(threads=1))
grad_weight_sum_dy = _register("grad_weight_sum_dy", "grad_weight_sum_dy", kernel=_GradWeightSumDy(threads=1))
affine_ignored = _register("affine_ignored", "affine_ignored", kernel=_AffineIgnored(threads=1))
affine_bias_scaled = _register("affine_bias_scaled", "affine_bias_scaled", kernel=_AffineBiasScaled(threads=1))
float32_accumulation = _register("float32_accumulation", None, kernel=_Float32Accumulation(threads=1))
momentum_inverted = _register("momentum_inverted", "momentum_inverted", module=_MomentumInverted)
momentum_none_as_default = _register("momentum_none_as_default", "momentum_none_as_default", module=_MomentumNoneAsDefault)
cumulative_off_by_one = _register("cumulative_off_by_one", "cumulative_off_by_one", module=_CumulativeOffByOne)
counter_not_incremented = _register("counter_not_incremented", "nbt_not_incremented", module=_CounterNotIncremented)
counter_incremented_in_eval = _register("counter_incremented_in_eval", "nbt_incremented_in_eval",
                                        module=_CounterIncrementedInEval)
update_in_eval = _register("update_in_eval", "update_in_eval", module=_UpdateInEval)
batch_stats_in_eval = _register("batch_stats_in_eval", "batch_stats_in_eval", module=_BatchStatsInEval)
legacy_toggling = _register("legacy_toggling", "legacy_toggling", module=_LegacyToggling)
flip_ignored = _register("flip_ignored", "flip_ignored", module=_FlipIgnored)
running_var_init_zero = _register("running_var_init_zero", "running_var_init_zero", module=_RunningVarInitZero)
reset_noop = _register("reset_noop", "reset_noop", module=_ResetNoop)
state_dict_without_counter = _register("state_dict_without_counter", "state_dict_without_counter",
                                       module=_StateDictWithoutCounter)
load_ignores_counter = _register("load_ignores_counter", "load_ignores_counter", module=_LoadIgnoresCounter)
untracked_has_buffers = _register("untracked_has_buffers", "untracked_has_buffers", module=_UntrackedHasBuffers)
no_batch_size_check = _register("no_batch_size_check", "no_batch_size_check", module=_NoBatchSizeCheck)
grad_bias_missing = _register("grad_bias_missing", None, module=_GradBiasMissing)

MUTANTS: dict[str, NumpyBackend] = {name: globals()[name] for name in CAUSE}


class _LegacyTorch(NumpyBackend):
    """PyTorch 1.1-1.5 flag semantics, *declared* through the torch-legacy profile."""

    conventions = PROFILES["torch-legacy"]

    def create(self, config):
        return _LegacyToggling(config, self.kernel)


declared_legacy = _LegacyTorch(NumpyKernel(threads=1), name="numpy-torch-legacy")
