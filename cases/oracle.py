"""The reference: BATCHNORM.md's formulas, in float64, as a small state machine.

It shares no code with any backend: sums are exactly rounded (math.fsum) per channel, and
the module logic is transcribed from the "One forward call" pseudo-code, line by line. It
also knows which calls raise, so a spec that expects an error the reference would not raise
(or misses one it would) is reported as a spec error rather than blamed on a backend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .schema import ModuleConfig

RANKS = {1: (2, 3), 2: (4,), 3: (5,)}


class OracleError(Exception):
    """The reference raises here; `kind` is the torch exception type's name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _per_channel(x: np.ndarray) -> np.ndarray:
    """(C, n) view of x: channel first, every other axis flattened."""
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _fsum_rows(a: np.ndarray) -> np.ndarray:
    return np.array([math.fsum(row) for row in a], dtype=np.float64)


@dataclass
class _Saved:
    """What the last forward used, for the analytic backward."""

    x: np.ndarray
    mean: np.ndarray
    var: np.ndarray  # biased batch variance, or running_var when buffers were used
    batch_stats: bool
    eps: float


class Oracle:
    def __init__(self, config: ModuleConfig) -> None:
        c = config.num_features
        self.dim = config.dim
        self.num_features = c
        self.eps = config.eps
        self.decay_convention = config.momentum_convention == "decay"
        self.momentum = self._torch_momentum(config.momentum)
        self.track_running_stats = config.track_running_stats
        self.training = True
        self.weight = np.ones(c) if config.affine else None
        self.bias = np.zeros(c) if config.affine else None
        self.requires_grad = {"weight": config.affine, "bias": config.affine}
        tracked = config.track_running_stats
        self.running_mean = np.zeros(c) if tracked else None
        self.running_var = np.ones(c) if tracked else None
        self.num_batches_tracked: Optional[int] = 0 if tracked else None
        self._saved: Optional[_Saved] = None

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
            self.momentum = self._torch_momentum(value)  # type: ignore[arg-type]
        elif name == "track_running_stats":
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
    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in RANKS[self.dim]:
            want = " or ".join(f"{r}D" for r in RANKS[self.dim])
            raise OracleError("ValueError", f"expected {want} input (got {x.ndim}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked += 1
            factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # The buffers handed to the functional call: only when they are updated or used.
        passes_buffers = (not self.training) or self.track_running_stats
        buffers = self.running_mean is not None and passes_buffers
        n = x.shape[0] * int(np.prod(x.shape[2:], dtype=np.int64))  # values per channel
        # F.batch_norm's checks, in its order, on its `training` argument (= batch_stats).
        if batch_stats and n == 1:
            raise OracleError("ValueError", "Expected more than 1 value per channel when training")
        if batch_stats and self.eps <= 0:
            raise OracleError("ValueError", "batch_norm eps must be positive during training")
        if self.eps < 0:
            raise OracleError("ValueError", "batch_norm eps must be non-negative")
        c = x.shape[1]
        if c != self.num_features and (buffers or self.weight is not None):
            which = "running_mean" if buffers else "weight"
            raise OracleError("RuntimeError", f"{which} should contain {c} elements not {self.num_features}")

        rows = _per_channel(x)
        if batch_stats:
            if n == 0:
                mean = np.full(c, np.nan)
                var = np.full(c, np.nan)
            else:
                mean = _fsum_rows(rows) / n
                var = _fsum_rows((rows - mean[:, None]) ** 2) / n  # biased: normalises
            if self.training and buffers and n > 0:
                unbiased = var * n / (n - 1)  # Bessel's correction, only for the buffer
                self.running_mean = (1 - factor) * self.running_mean + factor * mean
                self.running_var = (1 - factor) * self.running_var + factor * unbiased
        else:
            mean, var = self.running_mean.copy(), self.running_var.copy()

        shape = [1] * x.ndim
        shape[1] = c
        w = self.weight if self.weight is not None else np.ones(c)
        b = self.bias if self.bias is not None else np.zeros(c)
        invstd = 1.0 / np.sqrt(var + self.eps)  # eps inside the square root
        y = (x - mean.reshape(shape)) * invstd.reshape(shape) * w.reshape(shape) + b.reshape(shape)
        self._saved = _Saved(x=x, mean=mean, var=var, batch_stats=batch_stats, eps=self.eps)
        return y

    # -- the backward call ------------------------------------------------------------
    def backward(self, dy: np.ndarray) -> dict[str, Optional[np.ndarray]]:
        if self._saved is None:
            raise OracleError("RuntimeError", "backward before any forward")
        s = self._saved
        dy = np.asarray(dy, dtype=np.float64)
        c = s.x.shape[1]
        n = s.x.size // c
        shape = [1] * s.x.ndim
        shape[1] = c
        invstd = 1.0 / np.sqrt(s.var + s.eps)
        xhat = (s.x - s.mean.reshape(shape)) * invstd.reshape(shape)
        g = self.weight if self.weight is not None else np.ones(c)
        sum_dy = _fsum_rows(_per_channel(dy))
        sum_dy_xhat = _fsum_rows(_per_channel(dy * xhat))
        if s.batch_stats:
            dx = (g * invstd / n).reshape(shape) * (
                n * dy - sum_dy.reshape(shape) - xhat * sum_dy_xhat.reshape(shape)
            )
        else:
            dx = dy * (g * invstd).reshape(shape)
        self._saved = None  # one backward per forward, as autograd without retain_graph
        return {
            "input": dx,
            "weight": sum_dy_xhat if self.weight is not None and self.requires_grad["weight"] else None,
            "bias": sum_dy if self.bias is not None and self.requires_grad["bias"] else None,
        }

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray | int]:
        names = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def load_state_dict(self, values: dict[str, object], strict: bool) -> None:
        own = self.state_dict()
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        for k, v in values.items():
            if k in own and k != "num_batches_tracked" and np.size(v) != self.num_features:
                raise OracleError("RuntimeError", f"size mismatch for {k}")
        if strict and (missing or unexpected):
            raise OracleError("RuntimeError", "Error(s) in loading state_dict")
        for k, v in values.items():
            if k in own:
                self.assign(k, v)  # type: ignore[arg-type]

    def reset_running_stats(self) -> None:
        if self.track_running_stats:  # checks the flag, so a True->False flip makes it a no-op
            if self.running_mean is None:
                raise OracleError("AttributeError", "'NoneType' object has no attribute 'zero_'")
            self.running_mean = np.zeros(self.num_features)
            self.running_var = np.ones(self.num_features)
            self.num_batches_tracked = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            self.weight = np.ones(self.num_features)
            self.bias = np.zeros(self.num_features)

    def set_requires_grad(self, name: str, flag: bool) -> None:
        self.requires_grad[name] = flag
