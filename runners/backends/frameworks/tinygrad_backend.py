"""tinygrad `tinygrad.nn.BatchNorm`, on tinygrad's CPU device (needs clang; otherwise its slow
PYTHON device).

From tinygrad's source (tinygrad/nn/__init__.py, class BatchNorm):
  - momentum (default 0.1) weights the new batch: running = (1 - m) * running + m * batch
    -> torch's convention; eps default 1e-5;
  - running_var takes the batch variance times numel/(numel - C) = n/(n-1) -> unbiased;
  - training is the TRAINING context variable; statistics in eval come from the buffers only
    while `track_running_stats` is set, read at call time (so a True->False flip makes eval use
    batch statistics, and False->True fails: the buffers were never created);
  - num_batches_tracked exists even when untracked; one value per channel divides by zero
    (ZeroDivisionError, not torch's ValueError).
Capabilities not declared: momentum=None (1 - None), state_dict and resets (no such methods),
requires_grad, float64, torch's exception types.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, FrameworkModule
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="torch", running_var="unbiased", default_eps=1e-5, one_value_raises=True)


def _tinygrad() -> Any:
    import os
    import shutil

    if shutil.which("clang") is None and not any(os.environ.get(d) for d in ("CPU", "PYTHON", "LLVM")):
        os.environ["PYTHON"] = "1"  # no clang for the CPU device: tinygrad's (slow) pure-Python device
    import tinygrad

    return tinygrad


class TinygradModule(FrameworkModule):
    def __init__(self, config: ModuleConfig) -> None:
        tg = _tinygrad()
        from tinygrad import nn
        from tinygrad.helpers import Context

        self.Tensor, self.Context = tg.Tensor, Context
        self.bn = nn.BatchNorm(config.num_features, eps=config.eps, affine=config.affine,
                               track_running_stats=config.track_running_stats, momentum=config.momentum)
        self._x: Any = None
        self._y: Any = None

    def set_attribute(self, name: str, value: object) -> None:
        setattr(self.bn, name, value)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = self.Tensor(np.ascontiguousarray(x, np.float32))
        with self.Context(TRAINING=int(self.training)):
            self._y = self.bn(self._x)
            out = self._y.numpy()
        return out

    def backward(self, grad_output: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        for p in (self._x, self.bn.weight, self.bn.bias):  # backward fills .grad of every float tensor in scope
            if p is not None:
                p.grad = None
        with self.Context(TRAINING=int(self.training)):
            (self._y * self.Tensor(np.ascontiguousarray(grad_output, np.float32))).sum().backward()
        grad = lambda t: None if t is None or t.grad is None else t.grad.numpy()
        return {"input": grad(self._x), "weight": grad(self.bn.weight), "bias": grad(self.bn.bias)}

    def get(self, name: str) -> Optional[np.ndarray | int]:
        t = getattr(self.bn, name, None)
        if t is None:
            return None
        value = t.numpy()
        return int(value) if name == "num_batches_tracked" else value.copy()

    def assign(self, name: str, value: np.ndarray | int) -> None:
        t = getattr(self.bn, name, None)
        if t is None:
            raise AttributeError(f"{name} is None")
        t.assign(self.Tensor(np.asarray(value).astype(t.numpy().dtype).reshape(t.shape))).realize()


class TinygradBackend(FrameworkBackend):
    name = "tinygrad"
    conventions = PROFILE
    capabilities = Capabilities(dtypes=frozenset({"float32"}), features=frozenset(
        {"init", "set_momentum", "toggle_track_running_stats", "untracked", "backward"}))
    install_hint = "pip install tinygrad (and Debian's clang for its CPU device)"
    probe = staticmethod(_tinygrad)

    def version(self) -> str:
        from tinygrad import Device

        return f"tinygrad {version('tinygrad')} (device {Device.DEFAULT})"

    def create(self, config: ModuleConfig) -> TinygradModule:
        return TinygradModule(config)
