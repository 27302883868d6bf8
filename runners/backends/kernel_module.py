"""Full nn.BatchNorm module semantics around any functional kernel.

Authors who only have a kernel (like `F.batch_norm`, or a fused C routine) implement the four
`Kernel` methods; `KernelModule` supplies everything else the way PyTorch does it since 1.6:
flags read at call time, None buffers and parameters, num_batches_tracked, momentum None as a
cumulative average, the decay convention, torch's input checks, state_dict and resets. This is
the one place backends get module semantics from; see docs/backends.md.
"""
from __future__ import annotations

import math
import sys
from typing import Optional, Protocol, cast

import numpy as np

from bnconform.cases.dtypes import DTYPES, accepts, dtype_name, numpy_dtype
from bnconform.cases.layouts import arrange, is_channels_last
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
        "mixed_precision",
        "channels_last",
        "strided",
        "grad_modes",
        "fold",
        "lazy",
        "no_bias",
        "state_dict_version",
    }
)
WIDE = np.dtype(np.float32)  # what 16-bit data is computed in when the kernel has no 16-bit path


class Kernel(Protocol):
    """Functional BatchNorm on (N, C, *spatial) arrays; weight/bias may be None.

    `x` (and `dy`) come in the input's dtype, the per-channel arrays in the module's; outputs are
    in the input's dtype, grads of weight and bias in the module's. A kernel lists the dtypes it
    handles in `native_dtypes` (default float32, float64): KernelModule computes float16/bfloat16
    data in float32 for the others, as torch's CPU kernels do. `channels_last = True` says the
    kernel takes channels_last arrays as they are (and returns that layout); otherwise it gets
    C-contiguous copies. An optional `batch_stats(x) -> (mean, biased var)` (float64) enables
    sharded batches.
    """

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
        unbiased variance. KernelModule only hands mean and invstd back to backward_train, so
        a kernel whose gradient wants other saved values (TensorFlow's reserve spaces) returns
        those in their place."""

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
        self.config = config
        self.dim = config.dim
        self.dtype = numpy_dtype(config.dtype)
        self.eps = config.eps
        self.decay_convention = config.momentum_convention == "decay"
        self.momentum = config.momentum
        self.track_running_stats = config.track_running_stats
        self.training = True
        self.affine = config.affine
        self.requires_grad = {"weight": config.affine, "bias": config.affine and config.bias}
        self.params: dict[str, Optional[Array]] = {"weight": None, "bias": None}
        self.buffers: dict[str, Optional[Array]] = {"running_mean": None, "running_var": None, "num_batches_tracked": None}
        self.num_features: Optional[int] = None  # None until a lazy module sees its first input
        if not config.lazy:
            self._materialise(config.num_features)
        self._saved: Optional[tuple] = None

    def _materialise(self, c: int) -> None:
        """Parameters and buffers for `c` channels, at their initial values."""
        config, dt = self.config, self.dtype
        self.num_features = c
        self.params = {
            "weight": np.ones(c, dt) if config.affine else None,
            "bias": np.zeros(c, dt) if config.affine and config.bias else None,
        }
        tracked = config.track_running_stats
        self.buffers = {
            "running_mean": np.zeros(c, dt) if tracked else None,
            "running_var": np.ones(c, dt) if tracked else None,
            "num_batches_tracked": np.zeros((), np.int64) if tracked else None,
        }

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

    def _prepare(self, xs: list[Array]) -> tuple[float, bool, Optional[Array], Optional[Array]]:
        """torch's checks and counting for one forward over `xs` (one array, or the shards of one
        batch): (EMA factor, batch statistics?, running buffers handed to the kernel)."""
        if self.num_features is None:  # LazyBatchNorm: the first input fixes num_features, before any check
            if xs[0].ndim < 2:
                raise IndexError("tuple index out of range")
            self._materialise(xs[0].shape[1])
        for x in xs:
            self._check_rank(x)
        m = self._new_batch_weight()
        factor = 0.0 if m is None else m
        if self.training and self.track_running_stats and self.buffers["num_batches_tracked"] is not None:
            factor = self._count_batch(m)  # before any other check, as torch does
        batch_stats, rm, rv = self._plan()
        n = sum(x.shape[0] for x in xs) * math.prod(xs[0].shape[2:])
        if batch_stats and n == 1 and self.raises_on_single_value:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(xs[0].shape)}")
        if batch_stats and self.eps <= 0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        if self.eps < 0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        if sum(x.size for x in xs) == 0:  # torch's native call returns before its channel and dtype checks
            return factor, batch_stats, rm, rv
        c = xs[0].shape[1]
        for name, arr in (("running_mean", rm), ("weight", self.params["weight"])):
            if arr is not None and arr.shape[0] != c:
                raise RuntimeError(f"{name} should contain {c} elements not {arr.shape[0]}")
        data = dtype_name(xs[0].dtype)
        given = rm is not None or self.params["weight"] is not None or self.params["bias"] is not None
        if given and not accepts(dtype_name(self.dtype), data):  # nothing given: nothing to disagree with
            raise RuntimeError(f"mixed dtype (CPU): expect parameter to have scalar type of Float ({data} input into a "
                               f"{dtype_name(self.dtype)} module)")
        return factor, batch_stats, rm, rv

    # -- what the kernel is handed: its dtypes and layouts --------------------------------
    def _native(self, dtype: np.dtype) -> bool:
        return dtype_name(dtype) in getattr(self.kernel, "native_dtypes", ("float32", "float64"))

    def _for_kernel(self, x: Array) -> Array:
        """x as the kernel takes it: its own layout if the kernel handles channels_last, else
        C-contiguous; float16/bfloat16 widened to float32 for a kernel without a 16-bit path."""
        if not self._native(x.dtype):
            x = x.astype(WIDE)
        if is_channels_last(x) and getattr(self.kernel, "channels_last", False):
            return x
        return np.ascontiguousarray(x)

    def _per_channel(self, a: Optional[Array], data: np.dtype) -> Optional[Array]:
        """A parameter or buffer as the kernel takes it (float32 copies for widened 16-bit data)."""
        if a is None or self._native(data):
            return a
        return a.astype(WIDE)

    @staticmethod
    def _as_caller_expects(y: Array, x: Array) -> Array:
        """The kernel's result in the input's dtype and torch's output layout: channels_last
        input gives channels_last output, any other layout a contiguous one."""
        if y.dtype != x.dtype:
            y = y.astype(x.dtype)
        if is_channels_last(x) and not is_channels_last(y):
            return arrange(y, "channels_last" if x.ndim == 4 else "channels_last_3d")
        if not is_channels_last(x) and not y.flags.c_contiguous:
            return np.ascontiguousarray(y)
        return y

    def forward(self, x: Array) -> Array:
        factor, batch_stats, rm, rv = self._prepare([x])
        w, b = self.params["weight"], self.params["bias"]
        n = x.shape[0] * math.prod(x.shape[2:])
        if n == 0:
            self._saved = ("empty", x)
            return self._as_caller_expects(np.empty(x.shape, x.dtype), x)
        xk = self._for_kernel(x)
        wk, bk = self._per_channel(w, x.dtype), self._per_channel(b, x.dtype)
        rmk, rvk = self._per_channel(rm, x.dtype), self._per_channel(rv, x.dtype)
        if batch_stats:
            y, mean, invstd = self.kernel.forward_train(xk, wk, bk, rmk, rvk, factor, self.eps)
            self._write_back(rm, rmk, rv, rvk)
            self._saved = ("train", x, xk, mean, invstd)
        else:
            # Eval without batch statistics: the buffers exist (running_mean and running_var go together).
            assert rmk is not None and rvk is not None
            y = self.kernel.forward_eval(xk, wk, bk, rmk, rvk, self.eps)
            self._saved = ("eval", x, xk, rmk.copy(), rvk.copy(), self.eps)
        return self._as_caller_expects(y, x)

    @staticmethod
    def _write_back(rm: Optional[Array], rmk: Optional[Array], rv: Optional[Array], rvk: Optional[Array]) -> None:
        """Running buffers updated in widened copies go back into the module's, in its dtype."""
        for own, used in ((rm, rmk), (rv, rvk)):
            if own is not None and used is not None and used is not own:
                own[...] = used

    def forward_with_grad_mode(self, x: Array, mode: str) -> Array:
        """A forward under no_grad / inference_mode: the same, but nothing to backward through."""
        y = self.forward(x)
        self._saved = ("no_graph", x)
        return y

    def forward_shards(self, shards: list[Array]) -> list[Array]:
        """One batch split into shards (SyncBatchNorm): each shard's statistics from the kernel's
        batch_stats, combined weighted by count (Chan), every shard normalised with the result."""
        factor, batch_stats, rm, rv = self._prepare(list(shards))
        self._saved = None
        w, b = self.params["weight"], self.params["bias"]
        parts = [(self._for_kernel(x), x.shape[0] * math.prod(x.shape[2:])) for x in shards]
        data = shards[0].dtype
        if batch_stats:
            stats = [(self.kernel.batch_stats(xk), k) for xk, k in parts if k > 0]  # type: ignore[attr-defined]
            total = sum(k for _, k in stats)
            if total == 0:  # every shard empty: empty outputs, buffers untouched (the counter has counted)
                return [self._as_caller_expects(np.empty(x.shape, x.dtype), x) for x in shards]
            mean, var = self._combine(stats, total)
            if rm is not None and rv is not None and total > 0:
                rm[...] = (1 - factor) * rm + factor * mean
                # Bessel's correction over the global count, through the kernel's own when it has one
                unbiased = getattr(self.kernel, "unbiased", lambda v, k: v * k / max(k - 1, 1))
                rv[...] = (1 - factor) * rv + factor * unbiased(var, total)
        else:
            assert rm is not None and rv is not None
            mean, var = rm.astype(np.float64), rv.astype(np.float64)
        wk, bk = self._per_channel(w, data), self._per_channel(b, data)
        kind = np.dtype(np.float64) if parts[0][0].dtype == np.float64 else WIDE
        m_k, v_k = np.asarray(mean, kind), np.asarray(var, kind)
        return [self._as_caller_expects(self.kernel.forward_eval(xk, wk, bk, m_k, v_k, self.eps), x)
                for (xk, _), x in zip(parts, shards)]

    @staticmethod
    def _combine(stats: list[tuple[tuple[Array, Array], int]], total: int) -> tuple[Array, Array]:
        """Mean and biased variance of a batch from its shards' (mean, variance) and counts:
        each weighted by its count, the spread of the shard means added (Chan)."""
        mean = sum(k * m for (m, _), k in stats) / total
        var = sum(k * v + k * (m - mean) ** 2 for (m, v), k in stats) / total
        return cast(Array, mean), cast(Array, var)

    # -- backward ----------------------------------------------------------------------
    def backward(self, grad_output: Array) -> dict[str, Optional[Array]]:
        if self._saved is None:
            raise RuntimeError("backward called without a preceding forward")
        if self._saved[0] == "no_graph":  # torch's words when the output has no grad_fn
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        w = self.params["weight"]
        x = self._saved[1]
        if self._saved[0] == "empty":  # an empty batch: nothing flows back, the weight and bias grads are zero
            dx: Array = self._as_caller_expects(np.empty(x.shape, x.dtype), x)
            dw = db = np.zeros(self.num_features or 0, self.dtype)
        else:
            xk = self._saved[2]
            dy = np.asarray(grad_output).astype(xk.dtype, copy=False)
            dy = arrange(dy, "channels_last" if xk.ndim == 4 else "channels_last_3d") if is_channels_last(xk) and \
                not xk.flags.c_contiguous else np.ascontiguousarray(dy)
            wk = self._per_channel(w, x.dtype)
            if self._saved[0] == "train":
                _, _, _, mean, invstd = self._saved
                dx, dw, db = self.kernel.backward_train(dy, xk, wk, mean, invstd)
            else:
                _, _, _, rm, rv, eps = self._saved
                dx, dw, db = self.kernel.backward_eval(dy, xk, wk, rm, rv, eps)
            dx, dw, db = self._as_caller_expects(dx, x), dw.astype(self.dtype, copy=False), db.astype(self.dtype, copy=False)
        self._saved = None
        return {
            "input": dx,
            "weight": dw if w is not None and self.requires_grad["weight"] else None,
            "bias": db if self.params["bias"] is not None and self.requires_grad["bias"] else None,
        }

    # -- folding -----------------------------------------------------------------------
    def fold(self, layer: str, weight: Array, bias: Optional[Array]) -> tuple[Array, Array]:
        """The eval-mode module folded into the layer before it (torch.nn.utils.fusion's formulas)."""
        if self.training:
            raise AssertionError("Fusion only for eval!")
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        if rm is None or rv is None:
            raise AssertionError("bn.running_mean and bn.running_var must not be None")
        if layer == "linear" and (self.params["weight"] is None or self.params["bias"] is None):
            # torch 2.13's fuse_linear_bn_weights multiplies by bn.weight and adds bn.bias unchecked
            raise TypeError("unsupported operand type(s) for *: 'NoneType' and 'Tensor'")
        c = rm.shape[0]
        gamma = self.params["weight"] if self.params["weight"] is not None else np.ones(c)
        beta = self.params["bias"] if self.params["bias"] is not None else np.zeros(c)
        scale = np.asarray(gamma, np.float64) / np.sqrt(rv.astype(np.float64) + self.eps)
        b = np.zeros(c) if bias is None else bias.astype(np.float64)
        fused_w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        fused_b = (b - rm.astype(np.float64)) * scale + beta
        return fused_w.astype(weight.dtype), fused_b.astype(weight.dtype)

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

    def load_state_dict(self, state: dict[str, Array], strict: bool = True, version: object = "current") -> None:
        """`version` is the dict's metadata: "current" (2), an older number, or "none". Like
        torch, a dict older than version 2 (or without metadata) that lacks num_batches_tracked
        keeps the module's own counter."""
        own = self.state_dict()
        old = version == "none" or (version != "current" and int(cast(int, version)) < 2)
        if old and self.track_running_stats and "num_batches_tracked" not in state:
            # the module's counter, or a 0 when it has none (which the strict check then finds unexpected)
            state = {**state, "num_batches_tracked": own.get("num_batches_tracked", np.zeros((), np.int64))}
        # Like torch: every entry that fits is copied, then the errors are raised together.
        wrong = [name for name, value in state.items() if name in own and np.shape(value) != own[name].shape]
        for name, value in state.items():
            if name in own and name not in wrong:
                self.assign(name, value)
        parts = [f"size mismatch for {name}: copying a param with shape {np.shape(state[name])}, the shape in "
                 f"current model is {own[name].shape}." for name in wrong]
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and unexpected:
            parts.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            parts.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if parts:
            raise RuntimeError("Error(s) in loading state_dict:\n\t" + "\n\t".join(parts))

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
            weight[...] = 1
        if bias is not None:
            bias[...] = 0

    def set_requires_grad(self, name: str, flag: bool) -> None:
        if self.params.get(name) is None:
            raise AttributeError(f"{name} is None")
        self.requires_grad[name] = flag


def kernel_capabilities(backward: bool, dims: frozenset[int] = frozenset({1, 2, 3}),
                        dtypes: frozenset[str] = frozenset(DTYPES), shards: bool = False) -> Capabilities:
    """Capabilities of a KernelModule-based backend (backward if the kernel has it, shards if it
    has batch_stats). Every dtype: KernelModule widens 16-bit data for a kernel without it."""
    features = KERNEL_MODULE_FEATURES | ({"backward"} if backward else set()) | ({"shards"} if shards else set())
    reasons = {"double_backward": "KernelModule's kernels give first derivatives only (no second-order kernel)"}
    return Capabilities(dims=dims, dtypes=dtypes, features=frozenset(features), reasons=reasons)
