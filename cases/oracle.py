"""The reference: docs/semantics.md's formulas, in float64, as a small state machine.

It shares no code with any backend: sums are exactly rounded (math.fsum), and the module
logic is transcribed from the pseudo-code of docs/semantics.md, "One forward call", line by line. It also knows
which calls raise, so a spec that expects an error the reference would not raise (or misses
one it would) is reported as a spec error rather than blamed on a backend.

`deviations` switches on known single bugs (cases/deviations.py); with none, this is the
reference. The switched branches are marked `# deviation:`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, cast

import numpy as np

from .deviations import DEVIATIONS
from .schema import ModuleConfig

RANKS = {1: (2, 3), 2: (4,), 3: (5,)}


class OracleError(Exception):
    """The reference raises here; `kind` is the torch exception type's name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _fsum(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Exactly rounded sum over `axes`, keeping them as size-1 dimensions."""
    keep = [i for i in range(a.ndim) if i not in axes]
    rows = int(np.prod([a.shape[i] for i in keep], dtype=np.int64))
    moved = np.transpose(a, keep + list(axes)).reshape(rows, -1)
    sums = np.array([math.fsum(row) for row in moved], dtype=np.float64)
    return sums.reshape([1 if i in axes else a.shape[i] for i in range(a.ndim)])


def _channel(v: np.ndarray) -> np.ndarray:
    """A statistic as one value per channel (per-position statistics averaged over positions)."""
    v = np.asarray(v)
    return v.reshape(v.shape[1], -1).mean(axis=1) if v.ndim > 1 else v


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
        c = config.num_features
        self.dim = config.dim
        self.dtype = config.dtype
        self.num_features = c
        self.eps = config.eps
        self.decay_convention = config.momentum_convention == "decay"
        self.momentum = self._torch_momentum(config.momentum)
        self.track_running_stats = config.track_running_stats
        self.constructed_tracking = config.track_running_stats
        self.training = True
        self.weight = np.ones(c) if config.affine else None
        self.bias = np.zeros(c) if config.affine else None
        self.requires_grad = {"weight": config.affine, "bias": config.affine}
        tracked = config.track_running_stats or "untracked_has_buffers" in self.dev  # deviation
        self.running_mean = np.zeros(c) if tracked else None
        self.running_var = np.full(c, self._initial_var()) if tracked else None
        counter = (tracked or "counter_when_untracked" in self.dev) and "no_counter" not in self.dev  # deviation
        self.num_batches_tracked: Optional[int] = 0 if counter else None
        self._saved: Optional[_Saved] = None

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
            xt = x.astype(self.dtype)
            mean_t = xt.mean(axis=axes, keepdims=True, dtype=self.dtype)
            var_t = (xt * xt).mean(axis=axes, keepdims=True, dtype=self.dtype) - mean_t * mean_t
            return mean_t.astype(np.float64), var_t.astype(np.float64)
        mean = _fsum(x, axes) / n
        return mean, _fsum((x - mean) ** 2, axes) / n

    def forward(self, x: np.ndarray) -> np.ndarray:
        dev = self.dev
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in RANKS[self.dim]:
            want = " or ".join(f"{r}D" for r in RANKS[self.dim])
            raise OracleError("ValueError", f"expected {want} input (got {x.ndim}D input)")
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
        n = x.shape[0] * int(np.prod(x.shape[2:], dtype=np.int64))  # values per channel
        # F.batch_norm's checks, in its order, on its `training` argument (= batch_stats).
        if batch_stats and n == 1 and "no_batch_size_check" not in dev:
            raise OracleError("ValueError", "Expected more than 1 value per channel when training")
        if batch_stats and self.eps <= 0:
            raise OracleError("ValueError", "batch_norm eps must be positive during training")
        if self.eps < 0:
            raise OracleError("ValueError", "batch_norm eps must be non-negative")
        c = x.shape[1]
        if c != self.num_features and (buffers or self.weight is not None):
            which = "running_mean" if buffers else "weight"
            raise OracleError("RuntimeError", f"{which} should contain {c} elements not {self.num_features}")

        per_position = "per_position_stats" in dev  # deviation: reduce over N only
        axes = (0,) if per_position else (0,) + tuple(range(2, x.ndim))
        count = x.shape[0] if per_position else n
        # Training updates the buffers it was given; a buggy eval may update them too.
        empty_updates = "empty_batch_poisons_buffers" in dev  # deviation: NaN statistics reach the buffers
        updates = buffers and (count > 0 or empty_updates) and (
            (self.training or (legacy and batch_stats)) if "update_in_eval" not in dev else True
        )
        if "batch_stats_in_eval" in dev and not self.training:
            updates = False
        if batch_stats or (updates and not self.training):
            if count == 0:
                mean = np.full([1 if i in axes else s for i, s in enumerate(x.shape)], np.nan)
                var = mean.copy()
            else:
                mean, var = self._batch_stats(x, axes, count)
            if updates:
                # `updates` implies `buffers`: running_mean is set, and running_var always with it.
                assert self.running_mean is not None and self.running_var is not None
                corrected = var if "biased_running_var" in dev or count == 0 else var * count / max(count - 1, 1)  # Bessel
                self.running_mean = (1 - factor) * self.running_mean + factor * _channel(mean)
                self.running_var = (1 - factor) * self.running_var + factor * _channel(corrected)
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
        with np.errstate(divide="ignore", invalid="ignore"):
            if "eps_outside_sqrt" in dev:  # deviation
                invstd = 1.0 / (np.sqrt(var) + self.eps)
            elif "eps_omitted" in dev:  # deviation
                invstd = 1.0 / np.sqrt(var)
            else:
                invstd = 1.0 / np.sqrt(var + self.eps)  # eps inside the square root
            xhat = (x - mean) * invstd
        if "affine_ignored" in dev:  # deviation
            y = xhat
        elif "affine_bias_scaled" in dev:  # deviation
            y = (xhat + b) * w
        else:
            y = xhat * w + b
        self._saved = _Saved(x=x, mean=mean, var=var, batch_stats=batch_stats, eps=self.eps,
                             axes=axes if batch_stats else (0,) + tuple(range(2, x.ndim)))
        return y

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
        if s.batch_stats and "grad_stats_constant" not in dev:
            dx = g * invstd / n * (n * dy - sum_dy - xhat * sum_dy_xhat)
        else:  # buffers are constants (and the deviation treats batch statistics as such)
            dx = dy * g * invstd
        grad_w = _fsum(dy * xhat, channel_axes).ravel()
        grad_b = _fsum(dy, channel_axes).ravel()
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

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray | int]:
        names = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
        if "state_dict_without_counter" in self.dev or "no_counter" in self.dev:  # deviation
            names.remove("num_batches_tracked")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def load_state_dict(self, values: dict[str, np.ndarray | int], strict: bool) -> None:
        own = self.state_dict()
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        for k, v in values.items():
            if k in own and k != "num_batches_tracked" and np.size(v) != self.num_features:
                raise OracleError("RuntimeError", f"size mismatch for {k}")
        if strict and (missing or unexpected):
            raise OracleError("RuntimeError", "Error(s) in loading state_dict")
        for k, v in values.items():
            if k in own and not (k == "num_batches_tracked" and "load_ignores_counter" in self.dev):
                self.assign(k, v)

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
            self.bias = np.zeros(self.num_features)

    def set_requires_grad(self, name: str, flag: bool) -> None:
        self.requires_grad[name] = flag
