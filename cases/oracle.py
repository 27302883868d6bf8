"""The reference: docs/semantics.md's formulas, in float64, as a small state machine.

It shares no code with any backend: sums are compensated (TwoSum at every level of a pairwise
sum, vectorised and in bounded blocks: exact to float64 rounding on tensors of any size), and the module
logic is transcribed from the pseudo-code of docs/semantics.md, "One forward call", line by line. It also knows
which calls raise, so a spec that expects an error the reference would not raise (or misses
one it would) is reported as a spec error rather than blamed on a backend.

`deviations` switches on known single bugs (cases/deviations.py); with none, this is the
reference. The switched branches are marked `# deviation:`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, cast

import numpy as np

from .deviations import DEVIATIONS
from .dtypes import LOW_PRECISION, accepts, dtype_name, numpy_dtype
from .layers import apply_layer
from .layouts import is_channels_last, output_layout
from .schema import ModuleConfig

RANKS = {1: (2, 3), 2: (4,), 3: (5,)}


class OracleError(Exception):
    """The reference raises here; `kind` is the torch exception type's name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Elements summed in one block: the temporaries of a sum stay within a few times this, whatever
# the tensor's size.
SUM_BLOCK = 1 << 22


def _two_sum_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of a 2-D float64 array as (hi, lo): pairwise, each level's rounding errors kept
    exactly by TwoSum (Knuth) and summed beside it. hi + lo is the exact sum to a few units of
    float64's 2**-106-wide double-double precision: correctly rounded but for pathological
    cancellation. Vectorised: log2(columns) levels of whole-array operations."""
    s = m
    lo = np.zeros(m.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):  # an infinite sum is what it is: hi says so
        return _pairwise(s, lo)


def _pairwise(s: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    while s.shape[1] > 1:
        if s.shape[1] % 2:  # fold the odd last column into the first, exactly
            a, b = s[:, 0], s[:, -1]
            t = a + b
            z = t - a
            lo += (a - (t - z)) + (b - z)
            s = s[:, :-1].copy()
            s[:, 0] = t
            continue
        a, b = s[:, 0::2], s[:, 1::2]
        t = a + b
        z = t - a
        lo += ((a - (t - z)) + (b - z)).sum(axis=1)
        s = t
    return s[:, 0], lo


def _sum_rows(m: np.ndarray) -> np.ndarray:
    """Accurate row sums of a 2-D float64 array in blocks of at most SUM_BLOCK elements."""
    rows, cols = m.shape
    if cols == 0:
        return np.zeros(rows)
    width = max(1, min(cols, SUM_BLOCK))
    parts: list[np.ndarray] = []
    for start in range(0, rows, max(1, SUM_BLOCK // width)):
        block = m[start:start + max(1, SUM_BLOCK // width)]
        pieces = [_two_sum_rows(block[:, c:c + width]) for c in range(0, cols, width)]
        if len(pieces) == 1:
            hi, lo = pieces[0]
        else:  # a row longer than a block: its blocks' (hi, lo) pairs summed the same way
            hi, lo = _two_sum_rows(np.stack([p for pair in pieces for p in pair], axis=1))
        with np.errstate(invalid="ignore"):
            parts.append(np.where(np.isfinite(hi), hi + lo, hi))  # inf or NaN: the plain sum says it
    return np.concatenate(parts)


def _fsum(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Accurate sum over `axes` (float64, compensated: see _two_sum_rows), keeping them as size-1
    dimensions."""
    keep = [i for i in range(a.ndim) if i not in axes]
    if a.size == 0:  # an empty reduction sums to 0 (an empty spatial axis, say)
        return np.zeros([1 if i in axes else a.shape[i] for i in range(a.ndim)])
    rows = int(np.prod([a.shape[i] for i in keep], dtype=np.int64))
    moved = np.transpose(np.asarray(a, dtype=np.float64), keep + list(axes)).reshape(rows, -1)
    return _sum_rows(moved).reshape([1 if i in axes else a.shape[i] for i in range(a.ndim)])


def _channel(v: np.ndarray) -> np.ndarray:
    """A statistic as one value per channel (per-position statistics averaged over positions)."""
    v = np.asarray(v)
    return v.reshape(v.shape[1], -1).mean(axis=1) if v.ndim > 1 else v


def _stale_tail(v: np.ndarray) -> np.ndarray:
    """deviation channel_tail: per-channel statistics (channels on axis 1) whose tail, the channels
    past the last full block of 8 when C > 8 and C % 8 != 0, holds those of the channel 8 before."""
    c = v.shape[1]
    if c <= 8 or c % 8 == 0:
        return v
    v = v.copy()
    v[:, c - c % 8:] = v[:, c - c % 8 - 8:c - 8]
    return v


def _half_sum(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """deviation half_backward_overflow: a sum over `axes` (keepdims) held in float16 (past 65504
    it is inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _fsum(a, axes).astype(np.float16).astype(np.float64)


@dataclass
class _Saved:
    """What the last forward used, for the analytic backward (broadcastable statistics)."""

    x: np.ndarray
    mean: np.ndarray
    var: np.ndarray  # biased batch variance, or running_var when buffers were used
    batch_stats: bool
    eps: float
    axes: tuple[int, ...]


class Oracle:
    def __init__(self, config: ModuleConfig, deviations: Iterable[str] = ()) -> None:
        self.dev = frozenset(deviations)
        unknown = self.dev - set(DEVIATIONS)
        if unknown:
            raise ValueError(f"unknown deviation(s) {sorted(unknown)}")
        self.config = config
        self.dim = config.dim
        self.dtype = config.dtype  # the module's dtype: parameters and buffers
        self.data_dtype = config.data_dtype  # the last input's dtype (output, input grads)
        self.input_layout = "contiguous"
        # deviation: eps held as a float32 operator attribute
        self.eps = float(np.float32(config.eps)) if "eps_float32" in self.dev else config.eps
        self.decay_convention = config.momentum_convention == "decay"
        self.momentum = self._torch_momentum(config.momentum)
        self.track_running_stats = config.track_running_stats
        self.constructed_tracking = config.track_running_stats
        self.training = True
        self.requires_grad = {"weight": config.affine, "bias": config.affine and config.bias}
        self.lazy = config.lazy  # LazyBatchNorm: nothing has a size until the first forward
        self.num_features = config.num_features
        self.weight: Optional[np.ndarray] = None
        self.bias: Optional[np.ndarray] = None
        self.running_mean: Optional[np.ndarray] = None
        self.running_var: Optional[np.ndarray] = None
        self.num_batches_tracked: Optional[int] = None
        if not self.lazy:
            self._materialise(config.num_features)
        self._saved: Optional[_Saved] = None

    def _materialise(self, c: int) -> None:
        """Parameters and buffers of `c` channels at their initial values."""
        config = self.config
        self.num_features = c
        self.weight = np.ones(c) if config.affine else None
        self.bias = np.zeros(c) if config.affine and config.bias else None
        tracked = config.track_running_stats or "untracked_has_buffers" in self.dev  # deviation
        self.running_mean = np.zeros(c) if tracked else None
        self.running_var = np.full(c, self._initial_var()) if tracked else None
        counter = (tracked or "counter_when_untracked" in self.dev) and "no_counter" not in self.dev  # deviation
        self.num_batches_tracked = 0 if counter else None
        self.lazy = False

    def _initial_var(self) -> float:
        return 0.0 if "running_var_init_zero" in self.dev else 1.0  # deviation

    # -- attributes -------------------------------------------------------------------
    def _torch_momentum(self, m: Optional[float]) -> Optional[float]:
        """Momentum as the weight of the new batch (the decay convention stores 1 - m)."""
        if m is None:
            return None
        return 1.0 - m if self.decay_convention else m

    def train(self) -> None:
        self.training = True

    def eval(self) -> None:
        self.training = False

    def set_attribute(self, name: str, value: object) -> None:
        if name == "momentum":
            self.momentum = self._torch_momentum(cast(Optional[float], value))  # a SetStep momentum
        elif name == "track_running_stats":
            if "flip_ignored" not in self.dev:  # deviation: the assignment has no effect
                self.track_running_stats = bool(value)
        else:
            raise ValueError(name)

    def get(self, name: str) -> object:
        return getattr(self, name)

    def assign(self, name: str, value: np.ndarray | int) -> None:
        if getattr(self, name) is None:
            raise OracleError("AttributeError", f"{name} is None")
        if name == "num_batches_tracked":
            self.num_batches_tracked = int(np.asarray(value))
        else:
            setattr(self, name, np.asarray(value, dtype=np.float64).reshape(self.num_features))

    def dtype_of(self, quantity: str) -> Optional[str]:
        """The dtype torch gives `quantity`: the input's for the output and input-side grads, the
        module's for parameters, buffers and their grads (None: not an array)."""
        if quantity in ("num_batches_tracked", "fused_output"):  # an int; an array the engine computes in float64
            return None
        if quantity in ("running_mean", "running_var") and "buffers_in_input_dtype" in self.dev:
            return self.data_dtype  # deviation
        if quantity in ("output", "grad_input", "gradgrad_input", "gradgrad_output"):
            return self.data_dtype
        return self.dtype

    def layout_of(self, quantity: str) -> Optional[str]:
        """The layout torch gives the output and the input gradient (cases/layouts.py)."""
        # (torch 2.13 gives gradgrad_output of a channels_last input in the contiguous layout in
        # training: not pinned down here)
        if quantity not in ("output", "grad_input", "gradgrad_input"):
            return None
        return output_layout(self.input_layout)

    # -- the forward call -------------------------------------------------------------
    def _factor(self) -> float:
        """The EMA factor of a training call that tracks; counts the batch."""
        dev, m = self.dev, self.momentum
        if m is not None:
            return 1.0 - m if "momentum_inverted" in dev else m  # deviation: inverted convention
        if "momentum_none_as_default" in dev:
            return 0.1  # deviation
        if "momentum_none_frozen" in dev:
            return 0.0  # deviation
        k = max(self.num_batches_tracked or 0, 1)
        return 1.0 / (k + 1) if "cumulative_off_by_one" in dev else 1.0 / k  # deviation: off by one

    def _batch_stats(self, x: np.ndarray, axes: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and biased variance over `axes` (keepdims), exactly rounded."""
        if "one_pass_variance" in self.dev:  # deviation: E[x^2] - E[x]^2 in the input dtype
            xt = x.astype(self.data_dtype if self.data_dtype == "float64" else "float32")
            mean_t = xt.mean(axis=axes, keepdims=True, dtype=xt.dtype)
            var_t = (xt * xt).mean(axis=axes, keepdims=True, dtype=xt.dtype) - mean_t * mean_t
            return mean_t.astype(np.float64), var_t.astype(np.float64)
        if "square_overflow" in self.dev:  # deviation: E[x^2] - mean^2, the raw squares summed in float32
            acc = np.float64 if self.data_dtype == "float64" else np.float32  # (float32: inf past |x| ~1.8e19)
            xt = np.ascontiguousarray(x).astype(acc)
            mean = _fsum(x, axes) / n
            with np.errstate(over="ignore", invalid="ignore"):
                second = (xt * xt).sum(axis=axes, keepdims=True, dtype=acc).astype(np.float64) / n
                return mean, second - mean * mean
        if "half_accumulation" in self.dev and self.data_dtype in LOW_PRECISION:  # deviation
            dt = numpy_dtype(self.data_dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                xt = x.astype(dt)
                mean_t = xt.sum(axis=axes, keepdims=True, dtype=dt) / dt.type(n)
                var_t = ((xt - mean_t) ** 2).sum(axis=axes, keepdims=True, dtype=dt) / dt.type(n)
            return mean_t.astype(np.float64), var_t.astype(np.float64)
        mean = _fsum(x, axes) / n
        squares = _fsum((x - mean) ** 2, axes)
        # torch 2.13's CPU kernels sum the squared deviations in the accumulation type of the
        # data (float32 for float32, float16 and bfloat16 data): past that type's largest value
        # the sum is +inf, and so are the variance and running_var; invstd is then 0, so the
        # output is the bias and grad_input 0 (docs/semantics.md, "Where arithmetic runs out").
        limit = float(np.finfo(np.float64 if self.data_dtype == "float64" else np.float32).max)
        with np.errstate(over="ignore"):
            return mean, np.where(squares > limit, np.inf, squares / n)

    def _shard_stats(self, xs: list[np.ndarray], axes: tuple[int, ...]) -> tuple[Any, Any, int]:
        """Mean and biased variance of the concatenation of `xs`, from each shard's own
        statistics weighted by its count (Chan's combination), and the total count."""
        counts = [int(np.prod([x.shape[i] for i in axes], dtype=np.int64)) for x in xs]
        total = sum(counts)
        stats = [self._batch_stats(x, axes, k) for x, k in zip(xs, counts) if k > 0]
        kept = [k for k in counts if k > 0]
        if "shard_stats_unweighted" in self.dev:  # deviation: per-shard moments averaged with equal weights
            mean = sum(m for m, _ in stats) / len(stats)
            second = sum(v + m * m for m, v in stats) / len(stats)
            return mean, second - mean * mean, total
        mean = sum(k * m for k, (m, _) in zip(kept, stats)) / total
        m2 = sum(k * v + k * (m - mean) ** 2 for k, (m, v) in zip(kept, stats))
        return mean, m2 / total, total

    def _accept_dtype(self, x: np.ndarray) -> np.ndarray:
        """Record the input's dtype and layout; torch's CPU dtype rule (cases/dtypes.py)."""
        self.data_dtype = dtype_name(x.dtype)
        self.input_layout = "channels_last" if is_channels_last(x) and x.ndim == 4 else (
            "channels_last_3d" if is_channels_last(x) else "contiguous")
        if "nhwc_as_nchw" in self.dev and self.input_layout != "contiguous":  # deviation: memory read as NCHW
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(x.shape)
        return np.asarray(x, dtype=np.float64)

    def forward(self, x: np.ndarray, grad_mode: str = "enabled") -> np.ndarray:
        return self._forward([x], grad_mode)[0]

    def forward_with_grad_mode(self, x: np.ndarray, mode: str) -> np.ndarray:
        """A forward under torch.no_grad() or torch.inference_mode(): the same values and buffer
        updates, but no graph, so no backward through it."""
        return self.forward(x, mode)

    def forward_shards(self, shards: list[np.ndarray]) -> list[np.ndarray]:
        """One forward over a batch split into shards: SyncBatchNorm's semantics, the statistics
        of the concatenation combined from per-shard statistics."""
        return self._forward(list(shards), "enabled", sharded=True)

    def _forward(self, xs_in: list[np.ndarray], grad_mode: str, sharded: bool = False) -> list[np.ndarray]:
        dev = self.dev
        xs = [self._accept_dtype(x) for x in xs_in]
        x = xs[0]
        if self.lazy:  # LazyBatchNorm: the first input fixes num_features, before any check
            if x.ndim < 2:
                raise OracleError("IndexError", "tuple index out of range")
            self._materialise(x.shape[1])
        for shard in xs:
            if shard.ndim not in RANKS[self.dim]:
                want = " or ".join(f"{r}D" for r in RANKS[self.dim])
                raise OracleError("ValueError", f"expected {want} input (got {shard.ndim}D input)")
        legacy = "legacy_toggling" in dev  # deviation: PyTorch 1.1-1.5 module logic
        counts = self.training or "nbt_incremented_in_eval" in dev  # deviation
        factor = 0.0 if self.momentum is None else self.momentum
        if counts and self.track_running_stats and self.num_batches_tracked is not None:
            if "nbt_not_incremented" not in dev:  # deviation
                self.num_batches_tracked += 1
            factor = self._factor() if self.training else factor
        elif self.momentum is not None and "momentum_inverted" in dev:
            factor = 1.0 - self.momentum
        if legacy:
            batch_stats = self.training or not self.track_running_stats
            passes_buffers = True
        else:
            batch_stats = self.training or (self.running_mean is None and self.running_var is None)
            # The buffers handed to the functional call: only when they are updated or used.
            passes_buffers = (not self.training) or self.track_running_stats
        if "batch_stats_in_eval" in dev:  # deviation
            batch_stats = True
        buffers = self.running_mean is not None and passes_buffers
        n = sum(s.shape[0] for s in xs) * int(np.prod(x.shape[2:], dtype=np.int64))  # values per channel
        # F.batch_norm's checks, in its order, on its `training` argument (= batch_stats).
        if batch_stats and n == 1 and "no_batch_size_check" not in dev:
            raise OracleError("ValueError", "Expected more than 1 value per channel when training")
        if batch_stats and self.eps <= 0:
            raise OracleError("ValueError", "batch_norm eps must be positive during training")
        if self.eps < 0:
            raise OracleError("ValueError", "batch_norm eps must be non-negative")
        # The native call returns early for an empty input, before its channel and dtype checks.
        empty = sum(s.size for s in xs) == 0
        c = x.shape[1]
        if empty and c != self.num_features:  # returned before the checks: empty outputs, nothing else
            self._saved = None
            return [np.empty(s.shape) for s in xs]
        if not empty and c != self.num_features and (buffers or self.weight is not None):
            which = "running_mean" if buffers else "weight"
            raise OracleError("RuntimeError", f"{which} should contain {c} elements not {self.num_features}")
        # The dtype rule binds the input to what the call is given: weight, bias, buffers (none: any dtype).
        given = self.weight is not None or self.bias is not None or buffers
        if not empty and given and not accepts(self.dtype, self.data_dtype):
            raise OracleError("RuntimeError", f"mixed dtype (CPU): {self.data_dtype} input, {self.dtype} module")

        per_position = "per_position_stats" in dev  # deviation: reduce over N only
        axes = (0,) if per_position else (0,) + tuple(range(2, x.ndim))
        count = sum(s.shape[0] for s in xs) if per_position else n
        # Training updates the buffers it was given; a buggy eval may update them too.
        empty_updates = "empty_batch_poisons_buffers" in dev  # deviation: NaN statistics reach the buffers
        updates = buffers and (count > 0 or empty_updates) and (
            (self.training or (legacy and batch_stats)) if "update_in_eval" not in dev else True
        )
        if "batch_stats_in_eval" in dev and not self.training:
            updates = False
        # deviation channels_past_64: a channels_last forward with batch statistics leaves channels 64+ as they are
        past_64 = "channels_past_64" in dev and batch_stats and not sharded and self.input_layout != "contiguous"
        if batch_stats or (updates and not self.training):
            if count == 0:
                mean = np.full([1 if i in axes else s for i, s in enumerate(x.shape)], np.nan)
                var = mean.copy()
            elif len(xs) > 1:
                mean, var, _ = self._shard_stats(xs, axes)
            else:
                mean, var = self._batch_stats(x, axes, count)
            if "channel_tail" in dev:  # deviation: the tail channels take the statistics of the channel 8 before
                mean, var = _stale_tail(mean), _stale_tail(var)
            if updates:
                # `updates` implies `buffers`: running_mean is set, and running_var always with it.
                assert self.running_mean is not None and self.running_var is not None
                corrected = var if "biased_running_var" in dev or count == 0 else var * count / max(count - 1, 1)  # Bessel
                if "momentum_float32" in dev:  # deviation: the decay weight 1 - factor held as a float32
                    factor = 1.0 - float(np.float32(1.0 - factor))
                if past_64:  # deviation: channels 64+ keep their running statistics (kept here)
                    kept = (self.running_mean[64:].copy(), self.running_var[64:].copy())
                self.running_mean = (1 - factor) * self.running_mean + factor * _channel(mean)
                self.running_var = (1 - factor) * self.running_var + factor * _channel(corrected)
                if past_64:  # deviation: (restored here)
                    self.running_mean[64:], self.running_var[64:] = kept
                if "buffers_in_input_dtype" in dev:  # deviation: the buffers are stored in the input's dtype
                    dt = numpy_dtype(self.data_dtype)
                    self.running_mean = self.running_mean.astype(dt).astype(np.float64)
                    self.running_var = self.running_var.astype(dt).astype(np.float64)
        if not batch_stats:
            if self.running_mean is None:  # reachable with legacy_toggling only (torch 1.5 raised too)
                raise OracleError("RuntimeError", "running_mean must be defined in evaluation mode")
            assert self.running_var is not None  # the buffers exist together
            shape = [1] * x.ndim
            shape[1] = c
            mean, var = self.running_mean.reshape(shape).copy(), self.running_var.reshape(shape).copy()
        elif "normalise_unbiased" in dev and count > 1:  # deviation
            var = var * count / (count - 1)

        shape = [1] * x.ndim
        shape[1] = c
        w = (self.weight if self.weight is not None else np.ones(c)).reshape(shape)
        b = (self.bias if self.bias is not None else np.zeros(c)).reshape(shape)
        outputs = []
        for shard in xs:
            with np.errstate(divide="ignore", invalid="ignore"):
                if "eps_outside_sqrt" in dev:  # deviation
                    invstd = 1.0 / (np.sqrt(var) + self.eps)
                elif "eps_omitted" in dev:  # deviation
                    invstd = 1.0 / np.sqrt(var)
                else:
                    invstd = 1.0 / np.sqrt(var + self.eps)  # eps inside the square root
                xhat = (shard - mean) * invstd
            if "affine_ignored" in dev:  # deviation
                outputs.append(xhat)
            elif "affine_bias_scaled" in dev:  # deviation
                outputs.append((xhat + b) * w)
            else:
                outputs.append(xhat * w + b)
        if past_64:  # deviation: the output of channels 64+ is their input
            for out, shard in zip(outputs, xs):
                out[:, 64:] = shard[:, 64:]
        # A backward needs the graph: none under no_grad / inference_mode, none across shards here.
        self._saved = None if grad_mode != "enabled" or sharded else _Saved(
            x=x, mean=mean, var=var, batch_stats=batch_stats, eps=self.eps,
            axes=axes if batch_stats else (0,) + tuple(range(2, x.ndim)))
        return outputs

    # -- the backward call ------------------------------------------------------------
    def backward(self, dy: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        if self._saved is None:
            raise OracleError("RuntimeError", "backward before any forward")
        s, dev = self._saved, self.dev
        dy = np.asarray(dy, dtype=np.float64)
        c = s.x.shape[1]
        shape = [1] * s.x.ndim
        shape[1] = c
        n = int(np.prod([s.x.shape[i] for i in s.axes]))
        channel_axes = (0,) + tuple(range(2, s.x.ndim))
        with np.errstate(divide="ignore", invalid="ignore"):
            if "eps_outside_sqrt" in dev:  # deviation
                invstd = 1.0 / (np.sqrt(s.var) + s.eps)
            elif "eps_omitted" in dev:  # deviation
                invstd = 1.0 / np.sqrt(s.var)
            else:
                invstd = 1.0 / np.sqrt(s.var + s.eps)
            xhat = (s.x - s.mean) * invstd
        g = (self.weight if self.weight is not None else np.ones(c)).reshape(shape)
        if "affine_ignored" in dev:  # deviation: the output did not depend on the weight
            g = np.ones(shape)
        sum_dy = _fsum(dy, s.axes)
        sum_dy_xhat = _fsum(dy * xhat, s.axes)
        half_sums = "half_backward_overflow" in dev and self.data_dtype == "float16"  # deviation
        if half_sums:  # deviation: the backward's sums of float16 data accumulated in float16
            sum_dy, sum_dy_xhat = _half_sum(dy, s.axes), _half_sum(dy * xhat, s.axes)
        if s.batch_stats and "grad_stats_constant" not in dev:
            dx = g * invstd / n * (n * dy - sum_dy - xhat * sum_dy_xhat)
        else:  # buffers are constants (and the deviation treats batch statistics as such)
            dx = dy * g * invstd
        grad_w = _fsum(dy * xhat, channel_axes).ravel()
        grad_b = _fsum(dy, channel_axes).ravel()
        if half_sums:  # deviation
            grad_w, grad_b = _half_sum(dy * xhat, channel_axes).ravel(), _half_sum(dy, channel_axes).ravel()
        if "grad_weight_sum_dy" in dev:  # deviation
            grad_w = grad_b.copy()
        if "affine_ignored" in dev:
            grad_w, grad_b = np.zeros(c), np.zeros(c)
        elif "affine_bias_scaled" in dev:  # y = (xhat + b) * w
            grad_w = _fsum(dy * (xhat + (self.bias if self.bias is not None else np.zeros(c)).reshape(shape)),
                           channel_axes).ravel()
            grad_b = _fsum(dy * g, channel_axes).ravel()
        self._saved = None  # one backward per forward, as autograd without retain_graph
        return {
            "input": dx,
            "weight": grad_w if self.weight is not None and self.requires_grad["weight"] else None,
            "bias": grad_b if self.bias is not None and self.requires_grad["bias"] else None,
        }

    # -- second order -----------------------------------------------------------------
    def _input_grad(self, x: np.ndarray, w: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """The first derivative dx of the last forward as a function of (x, weight, dy), in a form
        that takes complex arguments (for the complex-step derivative). Every argument has one
        leading axis of independent evaluations (size 1 where it is not perturbed)."""
        s = self._saved
        assert s is not None
        axes = tuple(a + 1 for a in s.axes)
        g = w.reshape((w.shape[0], 1, s.x.shape[1]) + (1,) * (s.x.ndim - 2))
        if not s.batch_stats:  # running statistics: dx does not depend on x (0 * x keeps its evaluations)
            return dy * g / np.sqrt(s.var + s.eps) + 0 * x
        n = int(np.prod([s.x.shape[i] for i in s.axes]))
        if "double_backward_stats_constant" in self.dev:  # deviation: the statistics' own derivatives dropped
            mean, var = s.mean[None], s.var[None]
        else:
            mean = np.sum(x, axis=axes, keepdims=True) / n
            var = np.sum((x - mean) ** 2, axis=axes, keepdims=True) / n
        invstd = 1.0 / np.sqrt(var + s.eps)
        xhat = (x - mean) * invstd
        sum_dy = np.sum(dy, axis=axes, keepdims=True)
        sum_dy_xhat = np.sum(dy * xhat, axis=axes, keepdims=True)
        return g * invstd / n * (n * dy - sum_dy - xhat * sum_dy_xhat)

    def double_backward(self, dy: np.ndarray, probe: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        """Gradients of L = sum(dx * probe), dx the input gradient for upstream `dy`, w.r.t. the
        input, the weight and dy. Each is the complex-step derivative of `_input_grad` (exact
        to rounding: Im f(z + ih) / h has no subtractive cancellation), one step per element."""
        if self._saved is None:
            raise OracleError("RuntimeError", "double backward before any forward")
        s = self._saved
        x, v = s.x, np.asarray(probe, dtype=np.float64)
        dy = np.asarray(dy, dtype=np.float64)
        c = x.shape[1]
        w = self.weight if self.weight is not None else np.ones(c)
        h = 1e-30

        def each(a: np.ndarray) -> np.ndarray:  # one perturbation per element: shape (size, *a.shape)
            return (np.eye(a.size) * 1j * h).reshape((a.size,) + a.shape)

        def loss(dx: np.ndarray) -> np.ndarray:
            return np.sum((dx * v).reshape(dx.shape[0], -1), axis=1)

        x1, w1, dy1 = x[None], w[None], dy[None]
        gx = loss(self._input_grad(x1 + each(x), w1, dy1)).imag / h
        gdy = loss(self._input_grad(x1, w1, dy1 + each(dy))).imag / h
        gw = loss(self._input_grad(x1, w1 + each(w), dy1)).imag / h
        return {
            "input": gx.reshape(x.shape),
            "weight": gw if self.weight is not None and self.requires_grad["weight"] else None,
            "output": gdy.reshape(x.shape),
        }

    # -- folding into the previous layer -------------------------------------------------
    def fold(self, layer: str, weight: np.ndarray, bias: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """W' = W * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) + beta
        (torch.nn.utils.fusion): the eval-mode module and the layer as one layer."""
        if self.training:
            raise OracleError("AssertionError", "Fusion only for eval!")
        if self.running_mean is None or self.running_var is None:
            raise OracleError("AssertionError", "bn.running_mean and bn.running_var must not be None")
        if layer == "linear" and (self.weight is None or self.bias is None):  # torch's fuse_linear_bn_weights
            raise OracleError("TypeError", "unsupported operand type(s): the module has no weight or no bias")
        c = self.num_features
        gamma = self.weight if self.weight is not None else np.ones(c)
        beta = self.bias if self.bias is not None else np.zeros(c)
        eps = 0.0 if "fold_without_eps" in self.dev else self.eps  # deviation
        scale = gamma / np.sqrt(self.running_var + eps)
        w = np.asarray(weight, dtype=np.float64)
        b = np.zeros(c) if bias is None else np.asarray(bias, dtype=np.float64)
        mean = 0.0 if "fold_mean_ignored" in self.dev else self.running_mean  # deviation
        return w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), (b - mean) * scale + beta

    def unfolded(self, layer: str, weight: np.ndarray, bias: Optional[np.ndarray], x: np.ndarray) -> np.ndarray:
        """The layer, then this module in eval mode: what the folded layer must compute."""
        if any(d.startswith("fold_") for d in self.dev):  # deviation: a wrong fold, applied as a layer
            return apply_layer(layer, x, *self.fold(layer, weight, bias))
        y = apply_layer(layer, x, weight, bias).astype(numpy_dtype(self.dtype))  # the layer's output dtype
        kept = (self.training, self._saved, self.data_dtype, self.input_layout)
        self.training = False
        try:
            return self.forward(y)
        finally:
            self.training, self._saved, self.data_dtype, self.input_layout = kept

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray | int]:
        names = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
        if "state_dict_without_counter" in self.dev or "no_counter" in self.dev:  # deviation
            names.remove("num_batches_tracked")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def load_state_dict(self, values: dict[str, np.ndarray | int], strict: bool, version: object = "current") -> None:
        """nn.BatchNorm's _version is 2; a dict of an older version (or with no version metadata)
        that lacks num_batches_tracked gets the module's own counter filled in."""
        if version != "current" and (version == "none" or int(cast(int, version)) < 2) and self.track_running_stats \
                and "num_batches_tracked" not in values:
            # the module's counter, or a 0 when it has none (which the strict check then finds unexpected)
            values = {**values, "num_batches_tracked": self.num_batches_tracked or 0}
        own = self.state_dict()
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        # torch copies every entry that fits, then raises for the rest (a failed strict load is not atomic).
        wrong_size = [k for k, v in values.items()
                      if k in own and k != "num_batches_tracked" and np.size(v) != self.num_features]
        for k, v in values.items():
            if k in own and k not in wrong_size and not (k == "num_batches_tracked" and "load_ignores_counter" in self.dev):
                self.assign(k, v)
        if wrong_size:
            raise OracleError("RuntimeError", f"size mismatch for {wrong_size[0]}")
        if strict and (missing or unexpected):
            raise OracleError("RuntimeError", "Error(s) in loading state_dict")

    def reset_running_stats(self) -> None:
        if "reset_noop" in self.dev:  # deviation
            return
        if self.track_running_stats:  # checks the flag, so a True->False flip makes it a no-op
            if self.running_mean is None:
                raise OracleError("AttributeError", "'NoneType' object has no attribute 'zero_'")
            self.running_mean = np.zeros(self.num_features)
            self.running_var = np.full(self.num_features, self._initial_var())
            self.num_batches_tracked = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            self.weight = np.ones(self.num_features)
        if self.bias is not None:
            self.bias = np.zeros(self.num_features)

    def set_requires_grad(self, name: str, flag: bool) -> None:
        self.requires_grad[name] = flag
