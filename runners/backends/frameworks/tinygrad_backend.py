"""tinygrad `tinygrad.nn.BatchNorm`, on tinygrad's CPU device where clang exists, otherwise on its
pure-Python PYTHON device.

Device (tinygrad 0.14, tinygrad/device.py and helpers.py): the device is the `DEV` environment
variable, read once when tinygrad is imported; unset, tinygrad opens the first usable device of
its list, and its CPU device compiles every kernel, and already the device's own helper
programs, with `$CC` (default `clang`): gcc cannot stand in (`--target=x86_64-none-unknown-elf`),
and without clang no device is usable ("no usable devices"). The old `PYTHON=1` is refused
("PYTHON=1 is deprecated, use DEV=PYTHON instead"). So, before tinygrad is imported in the
backend's worker process, this adapter leaves a caller's `DEV` alone, keeps tinygrad's own
choice (the CPU device) where the compiler it will call is a clang on PATH, and otherwise sets
`DEV=PYTHON`: slower, float32 arithmetic too, but reductions in another order, so one finding
differs and each device has its manifest (`manifest`). version() names the device and why.

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

import os
import shutil
import sys
from importlib.metadata import version
from importlib.util import find_spec
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import MANIFESTS, FrameworkBackend, FrameworkModule
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="torch", running_var="unbiased", default_eps=1e-5, one_value_raises=True)


_DEVICE_REASON: Optional[str] = None  # why this process uses its tinygrad device, once chosen


def _choose_device() -> str:
    """Set DEV for tinygrad (before its import) unless the caller did; say why the device is the one."""
    if os.environ.get("DEV"):
        return "DEV set by the caller"
    cc = os.environ.get("CC") or "clang"  # what tinygrad's CPU device runs to compile
    if not os.path.basename(cc).startswith("clang"):
        why = f"CC={cc} is not the clang tinygrad's CPU device needs"
    elif shutil.which(cc) is None:
        why = f"no {cc} on PATH for tinygrad's CPU device"
    else:
        return f"tinygrad's own choice, its CPU device compiling with {shutil.which(cc)}"
    os.environ["DEV"] = "PYTHON"
    if "tinygrad" in sys.modules:  # imported before this adapter chose, so DEV was read already
        from tinygrad.helpers import DEV

        if not DEV.value[0].device:
            DEV.value = "PYTHON"
    return why


def _tinygrad() -> Any:
    """tinygrad, imported on the device chosen for this process (and that device opened)."""
    global _DEVICE_REASON
    if _DEVICE_REASON is None and find_spec("tinygrad") is not None:  # no tinygrad: no DEV either
        _DEVICE_REASON = _choose_device()
    import tinygrad

    tinygrad.Device[tinygrad.Device.DEFAULT]  # opens it: an unusable device is the skip reason
    return tinygrad


def device() -> str:
    """The device this process runs tinygrad on, and why."""
    tg = _tinygrad()
    return f"{tg.Device.DEFAULT}: {_DEVICE_REASON}"


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
    install_hint = "pip install tinygrad (its CPU device needs clang, else DEV=PYTHON is used)"
    probe = staticmethod(_tinygrad)

    @property
    def manifest(self) -> str:
        """tinygrad.yaml on the CPU device; tinygrad-python.yaml (the same findings but one, which
        that device does not show) on DEV=PYTHON."""
        try:
            python = _tinygrad().Device.DEFAULT.split(":")[0] == "PYTHON"
        except Exception:  # not installed: the CPU device's manifest, as documented
            python = False
        return str(MANIFESTS / ("tinygrad-python.yaml" if python else "tinygrad.yaml"))

    def version(self) -> str:
        try:
            return f"tinygrad {version('tinygrad')} (device {device()})"
        except Exception as exc:  # not installed, or no usable device: available() says so too
            return f"tinygrad unavailable ({type(exc).__name__}: {exc})"

    def create(self, config: ModuleConfig) -> TinygradModule:
        return TinygradModule(config)
