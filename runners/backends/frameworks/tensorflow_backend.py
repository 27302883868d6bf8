"""TensorFlow's fused BatchNorm kernel, `tf.raw_ops.FusedBatchNormV3` (and its gradient,
`FusedBatchNormGradV3`), as a kernel inside KernelModule.

It is the op behind tf.keras' fused path and most TensorFlow models. TensorFlow has the op,
not torch's module: KernelModule supplies the module semantics around it (flags, counter,
state, torch's checks), so what is tested is the op's arithmetic, dtypes and layout. From the
op's registration (tensorflow/core/ops/nn_ops.cc) and CPU kernel
(tensorflow/core/kernels/fused_batch_norm_op.cc):
  - `exponential_avg_factor` f is the weight of the *new* batch:
    running = (1 - f) * running + f * batch    -> torch's convention (KernelModule passes the
    momentum as it is; f = 1 with no running buffers returns the batch statistics);
  - the running variance takes the batch variance times n / (n - 1)   -> unbiased; with one
    value per channel n - 1 is taken as 1 (no error, variance 0);
  - `epsilon` defaults to 1e-4 (an attr stored as float32);
  - T (x, y) is half, bfloat16 or float; U (scale, offset, statistics) is float: there is no
    float64, and 16-bit data always meets float32 parameters (torch's mixed precision);
  - data_format NHWC (4-D) or NDHWC (5-D) is the CPU kernel's own layout, so channels_last
    memory is handed over as it is, and (N, C) / (N, C, L) / NCHW / NCDHW arrays are viewed as
    NHWC / NDHWC (the layout conversion: TensorFlow copies the transposed view).
On x86 TensorFlow runs this op through oneDNN unless TF_ENABLE_ONEDNN_OPTS=0 (its own Eigen
kernel then), here on one intra-op thread unless TF_NUM_INTRAOP_THREADS says otherwise (its
float32 sums depend on the thread count); version() says both. Not declared, each skipped with
the reason: float64, double backward, and what KernelModule's NumPy would do instead of
TensorFlow (strided input copied before the op, folding, grad modes).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import KERNEL_MODULE_ONLY, OperatorBackend, operator_capabilities
from bnconform.runners.backends.protocol import Conventions

PROFILE = Conventions(momentum="torch", running_var="unbiased", default_eps=1e-4, one_value_raises=False)
FORMATS = {4: "NHWC", 5: "NDHWC"}
F32 = np.dtype(np.float32)


THREADS = "TF_NUM_INTRAOP_THREADS"


def import_tensorflow() -> Any:
    """tensorflow on one intra-op thread unless the caller set TF_NUM_INTRAOP_THREADS: its float32
    sums depend on the thread count (oneDNN sums a channel per thread, then the partial sums), so
    one thread makes the columns' results, and their manifests, the same on every machine."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # its start-up notes would fill the worker's log
    os.environ.setdefault(THREADS, "1")
    import tensorflow as tf

    return tf


def tensorflow_version() -> str:
    """TensorFlow's version and the setting its results depend on (intra-op threads)."""
    try:
        tf = import_tensorflow()
    except Exception as exc:  # not installed: available() says so too
        return f"tensorflow unavailable ({type(exc).__name__})"
    return f"tensorflow {tf.__version__}, {os.environ[THREADS]} intra-op thread(s)"


def _channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, *S) as the op's NHWC / NDHWC: a view ((N, C) -> (N, 1, 1, C), (N, C, L) -> (N, L, 1, C))."""
    if x.ndim == 2:
        return x[:, None, None, :]
    if x.ndim == 3:
        return x.transpose(0, 2, 1)[:, :, None, :]
    return x.transpose((0,) + tuple(range(2, x.ndim)) + (1,))


def _channels_first(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The op's NHWC / NDHWC result viewed back in `like`'s (N, C, *S) shape (channels_last strides)."""
    if like.ndim == 2:
        return y[:, 0, 0, :]
    if like.ndim == 3:
        return y[:, :, 0, :].transpose(0, 2, 1)
    return y.transpose((0, y.ndim - 1) + tuple(range(1, y.ndim - 1)))


class FusedBatchNormKernel:
    """kernel_module.Kernel over FusedBatchNormV3 / FusedBatchNormGradV3 on the CPU."""

    native_dtypes = ("float16", "bfloat16", "float32")
    channels_last = True  # NHWC is the op's layout: channels_last arrays go in without a copy

    def __init__(self) -> None:
        tf = import_tensorflow()
        self.forward_op = tf.raw_ops.FusedBatchNormV3
        self.backward_op = tf.raw_ops.FusedBatchNormGradV3
        self.empty = np.zeros(0, F32)

    @staticmethod
    def _u(a: Optional[np.ndarray], c: int, fill: float) -> np.ndarray:
        """A per-channel input as U (float32); None (affine=False, no buffers) as `fill`."""
        return np.full(c, fill, F32) if a is None else np.asarray(a, F32)

    def _forward(self, x: np.ndarray, weight, bias, mean, var, factor: float, eps: float, training: bool) -> tuple:
        c = x.shape[1]
        xt = _channels_last(x)
        out = self.forward_op(
            x=xt, scale=self._u(weight, c, 1.0), offset=self._u(bias, c, 0.0), mean=self._u(mean, c, 0.0),
            variance=self._u(var, c, 1.0), epsilon=float(eps), exponential_avg_factor=float(factor),
            data_format=FORMATS[xt.ndim], is_training=training)
        return tuple(np.asarray(t) for t in out)

    def forward_train(self, x, weight, bias, running_mean, running_var, factor, eps):
        tracked = running_mean is not None
        y, new_mean, new_var, saved_mean, saved_var, _ = self._forward(
            x, weight, bias, running_mean, running_var, factor if tracked else 1.0, eps, True)
        if tracked:
            running_mean[...], running_var[...] = new_mean, new_var
        # The op's gradient takes its reserve spaces (batch mean, biased batch variance) and eps:
        # KernelModule hands the last two slots back to backward_train untouched.
        return _channels_first(y, x), saved_mean, (saved_var, float(eps))

    def forward_eval(self, x, weight, bias, running_mean, running_var, eps):
        return _channels_first(self._forward(x, weight, bias, running_mean, running_var, 1.0, eps, False)[0], x)

    def batch_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A shard's mean and biased variance, as the op computes them (its reserve spaces)."""
        _, _, _, mean, var, _ = self._forward(x, None, None, None, None, 1.0, 1e-5, True)
        return mean.astype(np.float64), var.astype(np.float64)

    def _backward(self, dy, x, weight, saved_1, saved_2, eps: float, training: bool):
        c = x.shape[1]
        xt = _channels_last(x)
        dx, dw, db, _, _ = self.backward_op(
            y_backprop=_channels_last(dy), x=xt, scale=self._u(weight, c, 1.0), reserve_space_1=self._u(saved_1, c, 0.0),
            reserve_space_2=self._u(saved_2, c, 1.0), reserve_space_3=self.empty, epsilon=float(eps),
            data_format=FORMATS[xt.ndim], is_training=training)
        return _channels_first(np.asarray(dx), x), np.asarray(dw), np.asarray(db)

    def backward_train(self, dy, x, weight, mean, saved):
        var, eps = saved  # forward_train's reserve space and eps
        return self._backward(dy, x, weight, mean, var, eps, True)

    def backward_eval(self, dy, x, weight, running_mean, running_var, eps):
        return self._backward(dy, x, weight, running_mean, running_var, eps, False)


class TensorFlowBackend(OperatorBackend):
    name = "tensorflow"
    conventions = PROFILE
    install_hint = "pip install tensorflow-cpu"
    probe = staticmethod(import_tensorflow)
    kernel_type = FusedBatchNormKernel  # the op accepts one value per channel (variance 0): declared, so not checked

    def __init__(self) -> None:
        self.capabilities = operator_capabilities(
            backward=True, dtypes=frozenset({"float16", "bfloat16", "float32"}), shards=True,
            without={**KERNEL_MODULE_ONLY,
                     "dtype=float64": "FusedBatchNormV3 takes half, bfloat16 or float data only (T), no double"})

    def version(self) -> str:
        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
        return f"{tensorflow_version()} ({'oneDNN' if onednn else 'Eigen, TF_ENABLE_ONEDNN_OPTS=0'} kernel)"
