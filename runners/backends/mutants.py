"""Deliberately broken BatchNorm backends: one realistic bug each, to prove the suite catches it.

Each mutant is the real NumPy backend with one piece replaced (a kernel method, or a module
method of KernelModule). `CAUSE` maps each to the deviation (cases/deviations.py) that
describes its bug, or None where the oracle has no switch for it. Load one with
`--backend bnconform.runners.backends.mutants:NAME`; score them all with `bnconform mutants`.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from bnconform.cases.layouts import is_channels_last
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
    def batch_stats(self, x, scratch=None):  # E[x^2] - E[x]^2 in the input dtype: cancels catastrophically
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
    def load_state_dict(self, state, strict=True, version="current"):
        nbt = self.get("num_batches_tracked")
        super().load_state_dict(state, strict, version)
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


# -- precision, layout, folding, shards (issue 11) ----------------------------------------------
_ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
_F32 = np.dtype(np.float32)


def _widened(x: np.ndarray) -> np.ndarray:
    return x.astype(_F32) if x.dtype.itemsize == 2 else x


class _HalfAccumulation(NumpyKernel):
    """Takes float16/bfloat16 data natively and sums it in that dtype: 65536 values near 300
    overflow float16's 65504, and every sum loses digits."""

    native_dtypes = _ALL_DTYPES

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        if x.dtype.itemsize != 2:
            return super().forward_train(x, weight, bias, running_mean, running_var, factor, eps)
        axes = (0,) + tuple(range(2, x.ndim))
        n = math.prod(x.shape[i] for i in axes)
        with np.errstate(over="ignore", invalid="ignore"):
            mean_t = x.sum(axis=axes, keepdims=True, dtype=x.dtype) / x.dtype.type(n)
            var_t = ((x - mean_t) ** 2).sum(axis=axes, keepdims=True, dtype=x.dtype) / x.dtype.type(n)
        mean, var = mean_t.astype(np.float64).ravel(), var_t.astype(np.float64).ravel()
        if running_mean is not None and running_var is not None:
            running_mean[...] = (1 - factor) * running_mean + factor * mean
            running_var[...] = (1 - factor) * running_var + factor * var * n / max(n - 1, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            invstd = 1.0 / np.sqrt(var + eps)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = (x.astype(np.float64) - mean.reshape(shape)) * invstd.reshape(shape)
            if weight is not None:
                y = y * weight.astype(np.float64).reshape(shape)
            if bias is not None:
                y = y + bias.astype(np.float64).reshape(shape)
        return y.astype(x.dtype), mean, invstd

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        w32 = None if weight is None else weight.astype(_F32)
        b32 = None if bias is None else bias.astype(_F32)
        return super().forward_eval(_widened(x), w32, b32, running_mean.astype(_F32) if x.dtype.itemsize == 2 else
                                    running_mean, running_var.astype(_F32) if x.dtype.itemsize == 2 else running_var,
                                    eps).astype(x.dtype)

    def backward_train(self, dy, x, weight, mean, invstd):
        w = None if weight is None else weight.astype(_F32) if x.dtype.itemsize == 2 else weight
        dx, dw, db = super().backward_train(_widened(dy), _widened(x), w, mean, invstd)
        return dx.astype(x.dtype), dw, db

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        w = None if weight is None else weight.astype(_F32) if x.dtype.itemsize == 2 else weight
        dx, dw, db = super().backward_eval(_widened(dy), _widened(x), w, running_mean, running_var, eps)
        return dx.astype(x.dtype), dw, db


class _BuffersInInputDtype(KernelModule):
    """After a training forward, the running buffers are cast to the input's dtype (an AMP port
    that autocasts everything the layer holds)."""

    def forward(self, x):
        y = super().forward(x)
        for name in ("running_mean", "running_var"):
            buf = self.buffers[name]
            if buf is not None and buf.dtype != x.dtype:
                self.buffers[name] = buf.astype(x.dtype)
        return y


class _NhwcAsNchw(NumpyKernel):
    """Says it takes channels_last arrays, then reads their memory as if it were NCHW."""

    channels_last = True

    @staticmethod
    def _as_nchw(x):
        return np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(x.shape) if not x.flags.c_contiguous else x

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        return super().forward_train(self._as_nchw(x), weight, bias, running_mean, running_var, factor, eps)

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        return super().forward_eval(self._as_nchw(x), weight, bias, running_mean, running_var, eps)

    def backward_train(self, dy, x, weight, mean, invstd):
        return super().backward_train(self._as_nchw(dy), self._as_nchw(x), weight, mean, invstd)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        return super().backward_eval(self._as_nchw(dy), self._as_nchw(x), weight, running_mean, running_var, eps)


class _FoldWithoutEps(KernelModule):
    def fold(self, layer, weight, bias):
        eps, self.eps = self.eps, 0.0  # divides by sqrt(running_var)
        try:
            return super().fold(layer, weight, bias)
        finally:
            self.eps = eps


class _FoldMeanIgnored(KernelModule):
    def fold(self, layer, weight, bias):
        rm = self.buffers["running_mean"]
        saved = None if rm is None else rm.copy()
        if rm is not None:
            rm[...] = 0  # b' = b * gamma / sqrt(var + eps) + beta
        try:
            return super().fold(layer, weight, bias)
        finally:
            if rm is not None and saved is not None:
                rm[...] = saved


class _MomentumFloat32(KernelModule):
    def _new_batch_weight(self):  # the decay weight 1 - m kept as a float32, as an operator attribute is
        m = super()._new_batch_weight()
        return None if m is None else 1.0 - float(np.float32(1.0 - m))

    def _count_batch(self, m):  # momentum=None's 1/k goes through the same float32 attribute
        factor = super()._count_batch(m)
        return 1.0 - float(np.float32(1.0 - factor))


class _EpsFloat32(KernelModule):
    def __init__(self, config, kernel):  # eps kept as a float32, as an operator attribute is
        super().__init__(config, kernel)
        self.eps = float(np.float32(self.eps))


class _ShardStatsUnweighted(KernelModule):
    @staticmethod
    def _combine(stats, total):  # each shard's moments weighted equally, whatever its size
        mean = sum(m for (m, _), _k in stats) / len(stats)
        second = sum(v + m * m for (m, v), _k in stats) / len(stats)
        return mean, second - mean * mean


# -- shape classes: kernel paths taken by shape and size (cases/shapes.py) -------------------
def _channel_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _values_per_channel(x: np.ndarray) -> int:
    return x.shape[0] * math.prod(x.shape[2:])


class _ChannelTail(NumpyKernel):
    """Vectorised over blocks of 8 channels; the tail (the channels past the last full block,
    when C > 8 and C % 8 != 0) runs in lanes still holding the block before: each tail channel
    is normalised with the statistics of the channel 8 before it, and its running statistics
    are updated with those. C = 8, 16, 64 and C <= 8 are right."""

    BLOCK = 8

    def batch_stats(self, x, scratch=None):
        mean, var = super().batch_stats(x, scratch)
        c, b = mean.shape[0], self.BLOCK
        if c > b and c % b:
            start = c - c % b
            mean[start:], var[start:] = mean[start - b:c - b], var[start - b:c - b]
        return mean, var


class _ChannelsPast64(NumpyKernel):
    """A channels_last training kernel whose channel loop stops at 64 (pytorch#57077: channels_last
    BatchNorm training right for the first 64 channels only): channels 64 and up keep their input
    as output and their running statistics. Contiguous input, eval mode and the backward are right."""

    channels_last = True
    LIMIT = 64

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        short = is_channels_last(x) and x.shape[1] > self.LIMIT
        x = np.ascontiguousarray(x)
        kept = None if running_mean is None or running_var is None else (
            running_mean[self.LIMIT:].copy(), running_var[self.LIMIT:].copy())
        y, mean, invstd = super().forward_train(x, weight, bias, running_mean, running_var, factor, eps)
        if short:
            y[:, self.LIMIT:] = x[:, self.LIMIT:]
            if kept is not None and running_mean is not None and running_var is not None:
                running_mean[self.LIMIT:], running_var[self.LIMIT:] = kept
        return y, mean, invstd

    # everything else takes its arrays C-contiguous, as NumpyKernel does (KernelModule puts the
    # results back into the input's layout)
    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        return super().forward_eval(np.ascontiguousarray(x), weight, bias, running_mean, running_var, eps)

    def batch_stats(self, x, scratch=None):
        return super().batch_stats(np.ascontiguousarray(x), None)

    def backward_train(self, dy, x, weight, mean, invstd):
        return super().backward_train(np.ascontiguousarray(dy), np.ascontiguousarray(x), weight, mean, invstd)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        return super().backward_eval(np.ascontiguousarray(dy), np.ascontiguousarray(x), weight, running_mean,
                                     running_var, eps)


class _LargePlaneOnePass(_OnePassVariance):
    """A "large plane" path (tensorflow#118701): a channel of 16384 values or more gets its
    variance in one pass, E[x^2] - E[x]^2 in float32 (float64 for float64 data); smaller planes
    take the right two-pass path. Data at an offset of 1e4 or more cancels there."""

    LARGE = 16384

    def batch_stats(self, x, scratch=None):
        if _values_per_channel(x) < self.LARGE:
            return NumpyKernel.batch_stats(self, x, scratch)
        return super().batch_stats(x, scratch)


class _SquareOverflow(NumpyKernel):
    """The variance as E[x^2] - mean^2 from the squares of the raw values, summed in float32
    (float64 for float64 data), the mean and the subtraction in float64: past |x| ~1.8e19 a
    float32 square is inf although the centred squares are not (x = 2e19 + 1e17 z), and data at
    an offset loses digits to the cancellation."""

    def batch_stats(self, x, scratch=None):
        mean, _var = super().batch_stats(x, scratch)
        with np.errstate(over="ignore", invalid="ignore"):
            second = (x * x).sum(axis=_channel_axes(x), dtype=x.dtype).astype(np.float64) / _values_per_channel(x)
            return mean, second - mean * mean


class _HalfBackwardSums(KernelModule):
    """For float16 data the backward's per-channel sums, sum(dy) and sum(dy * xhat), are held in a
    float16 accumulator: past 65504 they are inf (65536 values per channel with dy ~ 1), and they
    keep float16's 11 bits below it. The forward, bfloat16 and float32 data are right."""

    def backward(self, grad_output):
        saved = self._saved
        if saved is None or saved[0] not in ("train", "eval") or saved[1].dtype != np.float16:
            return super().backward(grad_output)
        x, xk = saved[1], saved[2]
        axes, n, c = _channel_axes(x), _values_per_channel(x), x.shape[1]
        if saved[0] == "train":  # the batch mean again, in float64: the float16 sums are all that is wrong
            mean, invstd = xk.astype(np.float64).mean(axis=axes), np.asarray(saved[4], np.float64)
        else:
            mean, invstd = np.asarray(saved[3], np.float64), 1.0 / np.sqrt(np.asarray(saved[4], np.float64) + saved[5])
        shape = (1, c) + (1,) * (x.ndim - 2)
        w = self.params["weight"]
        g = (np.ones(c) if w is None else w.astype(np.float64)).reshape(shape)
        dy = np.ascontiguousarray(grad_output).astype(np.float64)
        xhat = (np.ascontiguousarray(xk).astype(np.float64) - mean.reshape(shape)) * invstd.reshape(shape)
        with np.errstate(over="ignore", invalid="ignore"):  # the accumulator is a float16
            sum_dy = dy.sum(axis=axes, keepdims=True).astype(np.float16).astype(np.float64)
            sum_dy_xhat = (dy * xhat).sum(axis=axes, keepdims=True).astype(np.float16).astype(np.float64)
            if saved[0] == "train":
                dx = g * invstd.reshape(shape) / n * (n * dy - sum_dy - xhat * sum_dy_xhat)
            else:
                dx = dy * g * invstd.reshape(shape)
        self._saved = None
        return {
            "input": self._as_caller_expects(dx.astype(np.float16), x),
            "weight": sum_dy_xhat.ravel().astype(self.dtype) if w is not None and self.requires_grad["weight"] else None,
            "bias": sum_dy.ravel().astype(self.dtype) if self.params["bias"] is not None and self.requires_grad["bias"]
            else None,
        }


def _stats_constant_factory(num_features, *, dim, **kwargs):
    """A torch BatchNorm whose hand-written backward treats the batch statistics as constants
    when differentiated again: first-order gradients are right, second-order ones are not."""
    import torch
    import torch.nn.functional as F

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, module):
            batch = module.training or module.running_mean is None
            with torch.no_grad():
                y = F.batch_norm(x, module.running_mean if not module.training or module.track_running_stats else None,
                                 module.running_var if not module.training or module.track_running_stats else None,
                                 weight, bias, batch, module.momentum if module.momentum is not None else 0.0, module.eps)
                axes = [0] + list(range(2, x.dim()))
                if batch:
                    mean, var = x.mean(axes, keepdim=True), x.var(axes, unbiased=False, keepdim=True)
                else:
                    shape = [1, -1] + [1] * (x.dim() - 2)
                    mean, var = module.running_mean.view(shape), module.running_var.view(shape)
            ctx.save_for_backward(x, weight)
            ctx.stats = (mean, (var + module.eps).rsqrt(), batch)
            ctx.has_bias = bias is not None
            return y

        @staticmethod
        def backward(ctx, dy):
            x, weight = ctx.saved_tensors
            mean, invstd, batch = ctx.stats  # constants: no graph back to x
            out_dtype, w_dtype = x.dtype, None if weight is None else weight.dtype
            x, dy = x.double(), dy.double()  # computed wide, like torch's own kernels
            weight = None if weight is None else weight.double()
            mean, invstd = mean.double(), invstd.double()
            axes = [0] + list(range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            g = weight.view(shape) if weight is not None else torch.ones_like(invstd)
            xhat = (x - mean) * invstd
            n = x.numel() // x.shape[1]
            if batch:
                dx = g * invstd / n * (n * dy - dy.sum(axes, keepdim=True) - xhat * (dy * xhat).sum(axes, keepdim=True))
            else:
                dx = dy * g * invstd
            dw = (dy * xhat).sum(axes).to(w_dtype) if weight is not None else None
            db = dy.sum(axes).to(w_dtype) if ctx.has_bias else None
            return dx.to(out_dtype), dw, db, None

    base = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[dim]

    class _Module(base):  # type: ignore[valid-type, misc]
        def forward(self, x):
            self._check_input_dim(x)
            if self.training and self.track_running_stats and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            momentum = self.momentum  # type: ignore[has-type]
            if self.momentum is None and self.training and self.num_batches_tracked is not None:  # type: ignore[has-type]
                self.momentum = 1.0 / float(self.num_batches_tracked)
            try:
                return _Fn.apply(x, self.weight, self.bias, self)
            finally:
                self.momentum = momentum

    return _Module(num_features, **kwargs)


class _TorchMutant:
    """torch's module with one piece replaced (a factory in the torch-module adapter's sense)."""

    def __init__(self, name: str, factory) -> None:
        from bnconform.runners.backends.protocol import Capabilities
        from bnconform.runners.backends.torch_backend import DTYPES, FEATURES

        self.name = f"mutant-{name}"
        self.factory = factory
        self.capabilities = Capabilities(dtypes=DTYPES, features=FEATURES - {"lazy"})

    def version(self) -> str:
        import torch

        return f"torch {torch.__version__} (mutated)"

    def create(self, config):
        from bnconform.runners.backends.torch_backend import TorchModule

        return TorchModule(config, "cpu", factory=self.factory)


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
half_accumulation = _register("half_accumulation", "half_accumulation", kernel=_HalfAccumulation(threads=1))
buffers_in_input_dtype = _register("buffers_in_input_dtype", "buffers_in_input_dtype", module=_BuffersInInputDtype)
nhwc_as_nchw = _register("nhwc_as_nchw", "nhwc_as_nchw", kernel=_NhwcAsNchw(threads=1))
fold_without_eps = _register("fold_without_eps", "fold_without_eps", module=_FoldWithoutEps)
fold_mean_ignored = _register("fold_mean_ignored", "fold_mean_ignored", module=_FoldMeanIgnored)
momentum_float32 = _register("momentum_float32", "momentum_float32", module=_MomentumFloat32)
eps_float32 = _register("eps_float32", "eps_float32", module=_EpsFloat32)
shard_stats_unweighted = _register("shard_stats_unweighted", "shard_stats_unweighted", module=_ShardStatsUnweighted)
channel_tail = _register("channel_tail", "channel_tail", kernel=_ChannelTail(threads=1))
channels_past_64 = _register("channels_past_64", "channels_past_64", kernel=_ChannelsPast64(threads=1))
large_plane_one_pass = _register("large_plane_one_pass", "one_pass_variance", kernel=_LargePlaneOnePass(threads=1))
square_overflow = _register("square_overflow", "square_overflow", kernel=_SquareOverflow(threads=1))
half_backward_overflow = _register("half_backward_overflow", "half_backward_overflow", module=_HalfBackwardSums)
CAUSE["double_backward_stats_constant"] = "double_backward_stats_constant"
double_backward_stats_constant = _TorchMutant("double_backward_stats_constant", _stats_constant_factory)

MUTANTS: dict[str, Any] = {name: globals()[name] for name in CAUSE}
# The shape-class mutants: wrong only on a path a shape or a magnitude takes, so among the built-in
# cases only the shapes library's families (shapes, magnitudes) reach them.
SHAPE_CLASS: tuple[str, ...] = ("channel_tail", "channels_past_64", "large_plane_one_pass", "square_overflow",
                                "half_backward_overflow")


class _LegacyTorch(NumpyBackend):
    """PyTorch 1.1-1.5 flag semantics, *declared* through the torch-legacy profile."""

    conventions = PROFILES["torch-legacy"]

    def create(self, config):
        return _LegacyToggling(config, self.kernel)


declared_legacy = _LegacyTorch(NumpyKernel(threads=1), name="numpy-torch-legacy")
