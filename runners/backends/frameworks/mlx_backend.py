"""MLX `mlx.nn.BatchNorm`, on MLX's CPU backend (the `mlx[cpu]` wheels on Linux).

From MLX's documentation and source (python/mlx/nn/layers/normalization.py, class BatchNorm):
  - the input is channels-last, NC, NLC or NHWC ("The input shape is specified as NC or NLC
    ... For four-dimensional arrays, the shape is NHWC"); 2 to 4 dimensions, anything else
    raises ValueError: there is no 5-D (3-D spatial) BatchNorm, so dim=3 is not declared;
  - momentum (default 0.1) weights the new batch:
    running_mean = (1 - mu) * running_mean + mu * mean               -> torch's convention;
  - the output uses `mx.var(x, ddof=0)`, the running variance `mx.var(x, ddof=1)` -> *unbiased*;
  - eps default 1e-5; `eps <= 0` raises ValueError in the constructor;
  - affine gives weight and bias; track_running_stats is read at call time; the running
    statistics are frozen parameters (not trainable); no num_batches_tracked, no
    momentum=None (1 - None), no bias=False;
  - in training, one value per channel raises ValueError ("BatchNorm training requires more
    than one value per channel."): torch's type, MLX's own words.
Layout: data arrive (N, C, *spatial) and go to MLX as np.moveaxis(x, 1, -1); a channels_last
array is already MLX's layout and goes in as it is (declared `channels_last`), and the output
comes back in the input's layout. float64 runs on the CPU device (`set_dtype`; MLX's GPU has
none); float16/bfloat16 are not declared. backward is `mx.vjp` of the layer's call with the
state it started from, w.r.t. the input and the *trainable* parameters (`freeze`/`unfreeze`,
MLX's requires_grad: a frozen parameter gets no gradient, as with `nn.value_and_grad`);
double_backward is `mx.grad` of that vjp.
"""
from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import Any, Callable, Optional

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, LayerModule
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="torch", running_var="unbiased", default_eps=1e-5, one_value_raises=True,
                      counter=False, messages="own")
NOT_DECLARED = {
    "dim=3": "mlx.nn.BatchNorm takes 2-4-D input (NC, NLC, NHWC): no 3-D (5-D input) BatchNorm",
    "momentum_none": "MLX's momentum is a float (1 - None fails)",
    "no_bias": "MLX's BatchNorm has affine (weight and bias together) only",
    "state_dict": "MLX's parameters() names running_mean/running_var but keeps no num_batches_tracked",
    "reset": "MLX's BatchNorm has no reset_running_stats/reset_parameters",
    "dtype=float16": "not declared: float16 modules are not wired in this adapter",
    "dtype=bfloat16": "not declared: bfloat16 modules are not wired in this adapter",
}
BUFFERS = ("running_mean", "running_var")


def _mlx() -> Any:
    mx = importlib.import_module("mlx.core")  # (no type stubs)
    nn = importlib.import_module("mlx.nn")

    mx.eval(nn.BatchNorm(2)(mx.array([[1.0, 2.0], [3.0, 5.0]])))  # really runs on this CPU
    return mx, nn


def _to_mlx_layout(x: np.ndarray) -> np.ndarray:
    """(N, C, *S) -> (N, *S, C), without a copy for channels_last memory (then C-contiguous)."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1) if x.ndim > 2 else x)


class MlxModule(LayerModule):
    def __init__(self, config: ModuleConfig) -> None:
        self.mx, self.nn = _mlx()
        self.config = config
        self.dtype = np.dtype(config.dtype)
        self.layer = self.nn.BatchNorm(config.num_features, eps=config.eps, momentum=config.momentum,
                                       affine=config.affine, track_running_stats=config.track_running_stats)
        if self.dtype != np.float32:
            self.layer.set_dtype(getattr(self.mx, self.dtype.name))
        self._saved: Any = None

    def _array(self, value: np.ndarray) -> Any:
        """An mx.array of the module's dtype (mx.array alone turns float64 NumPy data into float32).

        A zero-size one is made by MLX itself: mx.array of a zero-size NumPy array can make a later
        evaluation hang or read garbage (docs/findings/mlx_empty_numpy_array.py), which is MLX's
        conversion from NumPy, not its BatchNorm."""
        mx_dtype = getattr(self.mx, self.dtype.name)
        if np.size(value) == 0:
            return self.mx.zeros(np.shape(value), dtype=mx_dtype)
        return self.mx.array(np.asarray(value, self.dtype), dtype=mx_dtype)

    def _variable(self, name: str) -> Any:
        return self.layer[name] if name in self.layer else None

    def _read(self, var: Any) -> np.ndarray:
        return np.array(var)

    def _write(self, var: Any, value: np.ndarray) -> None:  # pragma: no cover - assign() below
        raise NotImplementedError

    def assign(self, name: str, value: np.ndarray | int) -> None:
        if name not in self.layer:
            raise AttributeError(f"{name} is None")
        setattr(self.layer, name, self._array(np.asarray(value, self.dtype).reshape(self.config.num_features)))

    def set_attribute(self, name: str, value: object) -> None:
        if name not in ("momentum", "track_running_stats"):
            raise AttributeError(f"MLX's BatchNorm has no {name}")
        setattr(self.layer, name, value)  # both read by __call__ at every call

    def forward(self, x: np.ndarray) -> np.ndarray:
        cl = _to_mlx_layout(np.asarray(x, self.dtype))
        self._saved = (self._array(cl), {k: self.layer[k] for k in BUFFERS if k in self.layer})
        y = np.array(self.layer(self._saved[0]))
        return self._back(y, x)

    def _back(self, y: np.ndarray, like: np.ndarray) -> np.ndarray:
        """MLX's (N, *S, C) result in the layout of the (N, C, *S) array `like`."""
        if y.ndim <= 2:
            return y
        out = np.moveaxis(y, -1, 1)
        return out if np.moveaxis(like, 1, -1).flags.c_contiguous and not like.flags.c_contiguous \
            else np.ascontiguousarray(out)

    def _function(self) -> tuple[Callable, list, list[str]]:
        """The last forward as a function of (x, *trainable parameters), from its starting state."""
        if self._saved is None:
            raise RuntimeError("backward called without a preceding forward")
        x, buffers = self._saved
        names = [k for k in ("weight", "bias") if k in self.layer.trainable_parameters()]
        layer = self.layer

        def f(xx: Any, *params: Any) -> Any:
            now = {k: layer[k] for k in list(BUFFERS) + names if k in layer}
            try:
                for k, v in {**buffers, **dict(zip(names, params))}.items():
                    setattr(layer, k, v)
                return layer(xx)
            finally:  # the training call's own update of the running statistics is not kept
                for k, v in now.items():
                    setattr(layer, k, v)

        return f, [x] + [self.layer[k] for k in names], names

    def backward(self, grad_output: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        f, primals, names = self._function()
        dy = self._array(_to_mlx_layout(grad_output))
        _, grads = self.mx.vjp(lambda *a: [f(*a)], primals, [dy])
        out: dict[str, Optional[np.ndarray]] = {"input": self._back(np.array(grads[0]), grad_output),
                                                "weight": None, "bias": None}
        for name, g in zip(names, grads[1:]):
            out[name] = np.array(g)
        return out

    def double_backward(self, grad_output: np.ndarray, probe: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        """Gradients of sum(dx * probe), dx the input gradient for grad_output, w.r.t. x, weight, grad_output."""
        f, primals, names = self._function()
        mx = self.mx
        p = self._array(_to_mlx_layout(probe))

        def loss(dy: Any, *args: Any) -> Any:
            _, grads = mx.vjp(lambda *a: [f(*a)], list(args), [dy])
            return mx.sum(grads[0] * p)

        dy = self._array(_to_mlx_layout(grad_output))
        grads = mx.grad(loss, argnums=list(range(len(primals) + 1)))(dy, *primals)
        weight = grads[2] if names[:1] == ["weight"] else None
        return {"input": self._back(np.array(grads[1]), grad_output), "output": self._back(np.array(grads[0]),
                                                                                           grad_output),
                "weight": None if weight is None else np.array(weight)}

    def set_requires_grad(self, name: str, flag: bool) -> None:
        if name not in self.layer:
            raise AttributeError(f"{name} is None")
        (self.layer.unfreeze if flag else self.layer.freeze)(keys=[name], recurse=False)


class MlxBackend(FrameworkBackend):
    name = "mlx"
    conventions = PROFILE
    capabilities = Capabilities(
        dims=frozenset({1, 2}),
        dtypes=frozenset({"float32", "float64"}),
        features=frozenset({"init", "set_momentum", "untracked", "toggle_track_running_stats", "backward",
                            "double_backward", "requires_grad", "errors", "channels_last"}),
        reasons=NOT_DECLARED)
    install_hint = 'pip install "mlx[cpu]" (Linux: mlx and its mlx-cpu wheel)'
    probe = staticmethod(_mlx)

    def version(self) -> str:
        return f"mlx {version('mlx')} (CPU device)"

    def create(self, config: ModuleConfig) -> MlxModule:
        return MlxModule(config)
