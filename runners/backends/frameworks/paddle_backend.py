"""PaddlePaddle 3.x `paddle.nn.BatchNorm1D/2D/3D`, default construction, NCL/NCHW/NCDHW data.

From Paddle's documentation (paddle.nn.BatchNorm1D/2D/3D, paddle.nn.functional.batch_norm) and
source (python/paddle/nn/layer/norm.py, _BatchNormBase):
  - momentum (default 0.9) weights the *old* value:
    moving_mean = moving_mean * momentum + batch_mean * (1 - momentum)   -> decay convention;
  - the documented batch variance is (1/m) sum (x_i - mean)^2 and the moving variance is
    updated with it                                                      -> *biased* variance;
  - epsilon default 1e-05; weight_attr=False / bias_attr=False give no weight / bias (affine);
  - the buffers are `_mean` and `_variance`, always created and, in training, always updated
    ("When training, we now always track global mean and variance"): no track_running_stats,
    no num_batches_tracked, no momentum=None (momentum must be a float);
  - the layer's dtype is Paddle's default dtype at construction (paddle.set_default_dtype);
    the CPU kernel is registered for float32 and float64 only.
The one-value-per-channel behaviour is not documented: declared as torch's (ValueError) so that
what Paddle really does shows in the matrix (docs/frameworks.md). Capabilities not declared
(skipped with the reason): untracked, toggling, momentum=None, float16/bfloat16, layouts,
state_dict (Paddle names the buffers _mean/_variance and keeps no counter), resets, double
backward, folding, shards, lazy modules.
"""
from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, LayerModule
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-5, one_value_raises=True,
                      counter=False, messages="own")
NAMES = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
LAYERS = {1: "BatchNorm1D", 2: "BatchNorm2D", 3: "BatchNorm3D"}
NOT_DECLARED = {
    "untracked": "Paddle's BatchNorm always has and updates its _mean/_variance (no track_running_stats)",
    "toggle_track_running_stats": "Paddle's BatchNorm has no track_running_stats",
    "momentum_none": "Paddle's momentum must be a float (batch_norm(): argument must be double, got NoneType)",
    "state_dict": "Paddle's state_dict names the buffers _mean/_variance and has no num_batches_tracked",
    "reset": "Paddle's BatchNorm has no reset_running_stats/reset_parameters",
    "dtype=float16": "Paddle's CPU batch_norm kernel is registered for float32 and float64 only",
    "dtype=bfloat16": "Paddle's CPU batch_norm kernel is registered for float32 and float64 only",
}


def _paddle() -> Any:
    import paddle

    return paddle


class PaddleModule(LayerModule):
    def __init__(self, config: ModuleConfig) -> None:
        self.paddle = paddle = _paddle()
        self.config = config
        cls = getattr(paddle.nn, LAYERS[config.dim])
        default = paddle.get_default_dtype()
        paddle.set_default_dtype(config.dtype)  # the layer's parameters and buffers take it
        try:
            off: Any = None if config.affine else False
            self.layer = cls(config.num_features, momentum=config.momentum, epsilon=config.eps,
                             weight_attr=off, bias_attr=off if config.bias else False)
        finally:
            paddle.set_default_dtype(default)
        self._x: Any = None
        self._y: Any = None

    def _variable(self, name: str) -> Any:
        return getattr(self.layer, NAMES[name], None)

    def _read(self, var: Any) -> np.ndarray:
        return np.asarray(var.numpy())

    def _write(self, var: Any, value: np.ndarray) -> None:
        var.set_value(value)

    def set_attribute(self, name: str, value: object) -> None:
        if name != "momentum":
            raise AttributeError(f"Paddle's BatchNorm has no {name}")
        self.layer._momentum = value  # read by forward at every call

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = self.paddle.to_tensor(np.array(x, order="C"), stop_gradient=False)  # 0-D stays 0-D
        with warnings.catch_warnings():  # "When training, we now always track global mean and variance."
            warnings.simplefilter("ignore", UserWarning)
            self._y = self.layer(self._x)
        return np.asarray(self._y.numpy())

    def backward(self, grad_output: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        if self._y is None:
            raise RuntimeError("backward called without a preceding forward")
        for param in (self.layer.weight, self.layer.bias):  # trainable or frozen: no earlier step's gradient survives
            if param is not None:
                param.clear_gradient(False)  # None, not zeros (Layer.clear_gradients zeroes trainable ones only)
        self._y.backward(self.paddle.to_tensor(np.array(grad_output, self._x.numpy().dtype, order="C")))
        grad = lambda t: None if t is None or t.stop_gradient or t.grad is None else np.asarray(t.grad.numpy()).copy()
        out = {"input": grad(self._x), "weight": grad(self.layer.weight), "bias": grad(self.layer.bias)}
        self._y = None
        return out

    def set_requires_grad(self, name: str, flag: bool) -> None:
        param = self._variable(name)
        if param is None:
            raise AttributeError(f"{name} is None")
        param.stop_gradient = not flag


class PaddleBackend(FrameworkBackend):
    name = "paddle"
    conventions = PROFILE
    capabilities = Capabilities(
        dtypes=frozenset({"float32", "float64"}),
        features=frozenset({"init", "set_momentum", "momentum_decay", "backward", "requires_grad", "errors",
                            "no_bias"}),
        reasons=NOT_DECLARED)
    install_hint = "pip install paddlepaddle"
    probe = staticmethod(_paddle)

    def version(self) -> str:
        return f"paddlepaddle {version('paddlepaddle')}"

    def create(self, config: ModuleConfig) -> PaddleModule:
        return PaddleModule(config)
