"""Full nn.BatchNorm module semantics around any functional kernel.

Authors who only have a kernel (like `F.batch_norm`, or a fused C routine) implement the four
`Kernel` methods; `KernelModule` supplies everything else the way PyTorch does it since 1.6:
flags read at call time, None buffers and parameters, num_batches_tracked, momentum None as a
cumulative average, the decay convention, torch's input checks, state_dict and resets. This is
the one place backends get module semantics from; see docs/backends.md.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Optional, Protocol

import numpy as np

from bnconform.runners.backends.protocol import Array, Capabilities, ModuleConfig

RANKS = {1: (2, 3), 2: (4,), 3: (5,)}
ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

KERNEL_MODULE_FEATURES = frozenset(
    {
        "toggle_track_running_stats",
        "set_momentum",
        "momentum_none",
        "momentum_decay",
        "state_dict",
        "reset",
        "requires_grad",
        "init",
        "errors",
        "untracked",
    }
)


class Kernel(Protocol):
    """Functional BatchNorm on (N, C, *spatial) arrays of one dtype; weight/bias may be None."""

    def forward_train(
        self,
        x: Array,
        weight: Optional[Array],
        bias: Optional[Array],
        running_mean: Optional[Array],
        running_var: Optional[Array],
        factor: float,
        eps: float,
    ) -> tuple[Array, Array, Array]:
        """Normalise with batch statistics; return (y, mean, invstd). When the running
        buffers are given, update them in place: r = (1-factor)*r + factor*stat, with the
        unbiased variance."""

    def forward_eval(
        self, x: Array, weight: Optional[Array], bias: Optional[Array], running_mean: Array, running_var: Array, eps: float
    ) -> Array:
        """Normalise with the running statistics."""

    def backward_train(
        self, dy: Array, x: Array, weight: Optional[Array], mean: Array, invstd: Array
    ) -> tuple[Array, Array, Array]:
        """(dx, dweight, dbias) through batch statistics."""

    def backward_eval(
        self, dy: Array, x: Array, weight: Optional[Array], running_mean: Array, running_var: Array, eps: float
    ) -> tuple[Array, Array, Array]:
        """(dx, dweight, dbias) with the running statistics as constants."""


def default_threads() -> int:
    """torch's thread count when torch is importable (the same as the reference), else the CPU count."""
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return os.cpu_count() or 1


class OutputRecycler:
    """A tiny caching allocator: hands back an output array once nobody else holds it.

    Large fresh allocations are served by mmap and page-faulted on first touch, which costs
    more than the kernel itself; reusing a released array avoids that. An array still
    referenced anywhere (refcount) is never handed out again.
    """

    KEEP = 3

    def __init__(self) -> None:
        self.pool: dict[tuple, list[np.ndarray]] = {}

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        arrays = self.pool.setdefault((tuple(shape), np.dtype(dtype).str), [])
        for arr in arrays:
            if sys.getrefcount(arr) <= 3:  # the list, the loop variable, getrefcount's argument
                return arr
        arr = np.empty(shape, dtype)
        if len(arrays) < self.KEEP:
            arrays.append(arr)
        return arr


class KernelModule:
    """A BatchNorm module whose arithmetic is done by `kernel`."""

    # torch raises for one value per channel; an adapter of a framework that does not can say so
    raises_on_single_value = True

    def __init__(self, config: ModuleConfig, kernel: Kernel) -> None:
        self.kernel = kernel
        self.dim = config.dim
        self.num_features = c = config.num_features
        self.dtype = np.dtype(config.dtype)
        self.eps = config.eps
        self.decay_convention = config.momentum_convention == "decay"
        self.momentum = config.momentum
        self.track_running_stats = config.track_running_stats
        self.training = True
        self.affine = config.affine
        self.params: dict[str, Optional[Array]] = {
            "weight": np.ones(c, self.dtype) if config.affine else None,
            "bias": np.zeros(c, self.dtype) if config.affine else None,
        }
        self.requires_grad = {"weight": config.affine, "bias": config.affine}
        tracked = config.track_running_stats
        self.buffers: dict[str, Optional[Array]] = {
            "running_mean": np.zeros(c, self.dtype) if tracked else None,
            "running_var": np.ones(c, self.dtype) if tracked else None,
            "num_batches_tracked": np.zeros((), np.int64) if tracked else None,
        }
        self._saved: Optional[tuple] = None

    # -- mode and attributes -----------------------------------------------------------
    def train(self) -> None:
        self.training = True

    def eval(self) -> None:
        self.training = False

    def set_attribute(self, name: str, value: object) -> None:
        if name not in ("track_running_stats", "momentum"):
            raise AttributeError(name)
        setattr(self, name, value)

    def _new_batch_weight(self) -> Optional[float]:
        """The momentum as the weight of the new batch, whatever the convention."""
        if self.momentum is None:
            return None
        return 1.0 - self.momentum if self.decay_convention else self.momentum

    # -- forward -----------------------------------------------------------------------
    def _count_batch(self, m: Optional[float]) -> float:
        """Count a tracked training batch; return its EMA factor (1/k for momentum None)."""
        nbt = self.buffers["num_batches_tracked"]
        assert nbt is not None  # forward counts only when the counter exists
        nbt += 1  # in place: nbt is the 0-d buffer
        return 1.0 / float(nbt) if m is None else m

    def _plan(self) -> tuple[bool, Optional[Array], Optional[Array]]:
        """Whether batch statistics normalise, and the buffers the kernel gets (to update or use)."""
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        batch_stats = self.training or (rm is None and rv is None)
        if self.training and not self.track_running_stats:
            rm = rv = None  # flipped off after construction: neither used nor updated
        return batch_stats, rm, rv

    def _check_rank(self, x: Array) -> None:
        if x.ndim not in RANKS[self.dim]:
            want = " or ".join(f"{r}D" for r in RANKS[self.dim])
            raise ValueError(f"expected {want} input (got {x.ndim}D input)")

    def forward(self, x: Array) -> Array:
        x = np.ascontiguousarray(x, dtype=self.dtype)
        self._check_rank(x)
        m = self._new_batch_weight()
        factor = 0.0 if m is None else m
        if self.training and self.track_running_stats and self.buffers["num_batches_tracked"] is not None:
            factor = self._count_batch(m)  # before any other check, as torch does
        batch_stats, rm, rv = self._plan()
        n = x.shape[0] * math.prod(x.shape[2:])
        if batch_stats and n == 1 and self.raises_on_single_value:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)}")
        if batch_stats and self.eps <= 0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        if self.eps < 0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        c = x.shape[1]
        for name, arr in (("running_mean", rm), ("weight", self.params["weight"])):
            if arr is not None and arr.shape[0] != c:
                raise RuntimeError(f"{name} should contain {c} elements not {arr.shape[0]}")
        w, b = self.params["weight"], self.params["bias"]
        if n == 0:
            self._saved = None
            return np.empty_like(x)
        if batch_stats:
            y, mean, invstd = self.kernel.forward_train(x, w, b, rm, rv, factor, self.eps)
            self._saved = ("train", x, mean, invstd)
        else:
            # Eval without batch statistics: the buffers exist (running_mean and running_var go together).
            assert rm is not None and rv is not None
            y = self.kernel.forward_eval(x, w, b, rm, rv, self.eps)
            self._saved = ("eval", x, rm.copy(), rv.copy(), self.eps)
        return y

    # -- backward ----------------------------------------------------------------------
    def backward(self, grad_output: Array) -> dict[str, Optional[Array]]:
        if self._saved is None:
            raise RuntimeError("backward called without a preceding forward")
        dy = np.ascontiguousarray(grad_output, dtype=self.dtype)
        w = self.params["weight"]
        if self._saved[0] == "train":
            _, x, mean, invstd = self._saved
            dx, dw, db = self.kernel.backward_train(dy, x, w, mean, invstd)
        else:
            _, x, rm, rv, eps = self._saved
            dx, dw, db = self.kernel.backward_eval(dy, x, w, rm, rv, eps)
        self._saved = None
        return {
            "input": dx,
            "weight": dw if w is not None and self.requires_grad["weight"] else None,
            "bias": db if self.params["bias"] is not None and self.requires_grad["bias"] else None,
        }

    # -- parameters, buffers, state ----------------------------------------------------
    def _slot(self, name: str) -> dict[str, Optional[Array]]:
        if name in self.params:
            return self.params
        if name in self.buffers:
            return self.buffers
        raise KeyError(name)

    def get(self, name: str) -> Optional[Array | int]:
        value = self._slot(name)[name]
        if value is None:
            return None
        return int(value) if name == "num_batches_tracked" else value.copy()

    def assign(self, name: str, value: Array | int) -> None:
        current = self._slot(name)[name]
        if current is None:
            raise AttributeError(f"{name} is None")
        current[...] = np.asarray(value).reshape(current.shape)

    def state_dict(self) -> dict[str, Array]:
        out = {}
        for name in ORDER:
            value = self._slot(name)[name]
            if value is not None:
                out[name] = value.copy()
        return out

    def load_state_dict(self, state: dict[str, Array], strict: bool = True) -> None:
        own = self.state_dict()
        for name, value in state.items():
            if name in own and np.shape(value) != own[name].shape:
                raise RuntimeError(
                    f"Error(s) in loading state_dict: size mismatch for {name}: copying a param with shape "
                    f"{np.shape(value)}, the shape in current model is {own[name].shape}."
                )
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if unexpected:
                parts.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                parts.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
            raise RuntimeError("Error(s) in loading state_dict:\n\t" + "\n\t".join(parts))
        for name, value in state.items():
            if name in own:
                self.assign(name, value)

    def reset_running_stats(self) -> None:
        if not self.track_running_stats:  # reads the current flag: a no-op after a True->False flip
            return
        rm, rv, nbt = self.buffers["running_mean"], self.buffers["running_var"], self.buffers["num_batches_tracked"]
        if rm is None:
            raise AttributeError("'NoneType' object has no attribute 'zero_'")
        assert rv is not None and nbt is not None  # the three buffers exist together
        rm[...] = 0
        rv[...] = 1
        nbt[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        weight, bias = self.params["weight"], self.params["bias"]
        if weight is not None:
            assert bias is not None  # affine: weight and bias exist together
            weight[...] = 1
            bias[...] = 0

    def set_requires_grad(self, name: str, flag: bool) -> None:
        if self.params.get(name) is None:
            raise AttributeError(f"{name} is None")
        self.requires_grad[name] = flag


def kernel_capabilities(backward: bool, dims: frozenset[int] = frozenset({1, 2, 3}),
                        dtypes: frozenset[str] = frozenset({"float32", "float64"})) -> Capabilities:
    """Capabilities of a KernelModule-based backend (backward if the kernel has it)."""
    features = KERNEL_MODULE_FEATURES | ({"backward"} if backward else set())
    return Capabilities(dims=dims, dtypes=dtypes, features=frozenset(features))
