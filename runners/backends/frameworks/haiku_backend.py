"""Haiku `haiku.BatchNorm` (data_format="channels_first") under `hk.transform_with_state`, on JAX's CPU
backend.

From Haiku 0.0.17's documentation and source (haiku/_src/batch_norm.py, class BatchNorm, and
haiku/_src/moving_averages.py, class ExponentialMovingAverage):
  - `decay_rate` (required, no default) is the decay of two ExponentialMovingAverage modules,
    `mean_ema` and `var_ema`: hidden = hidden * decay + value * (1 - decay)  -> decay convention;
  - the batch variance is `mean(x^2) - mean(x)^2` over every axis but the channel's (one pass,
    in the input dtype) -> the *biased* variance, and var_ema takes it as it is;
  - the EMAs zero-debias (zero_debias=True, not settable through BatchNorm): each keeps
    `counter` (int32, +1 at every training call), `hidden` (created zeros) and
    `average = hidden / (1 - decay**counter)`, and eval normalises with `average`. `average`
    is this column's running_mean / running_var (what eval uses, the role of torch's buffers),
    and the EMA's counter its num_batches_tracked. After k training batches average is
    sum_i (1-d) d^(k-i) b_i / (1 - d^k): torch's r_k less its d^k * r_0 term, rescaled to a
    full weight, so the initial values (and any assigned ones) carry no weight in it, and the
    first batch's statistics become the running statistics outright. No Conventions switch
    describes that; docs/frameworks.md ("Haiku") and manifests/haiku.yaml show what it does;
  - eps default 1e-5, not checked; create_scale/create_offset give scale and offset (affine);
    no track_running_stats, no momentum=None, nothing rejects one value per channel.
State and parameters: Haiku creates `average` only at a training call, so the fresh module is
Haiku's own `init` on a two-row batch of -1 and +1 per channel (mean 0, variance 1): counter 0,
hidden zeros, average 0 and 1, torch's initial values, and scale ones, offset zeros. Haiku's
scale, offset and statistics have the input's rank, (1, C, 1, ...): they are kept here as (C,)
and reshaped to the rank of each call's input. `assign` of a running statistic writes
`average` and the `hidden` consistent with it, hidden = value * (1 - decay**counter) (0 while
counter is 0: a debiased EMA has no initial value). The decay is an argument of the transformed
function, so set_momentum changes it between calls as a Haiku user would. backward and
double_backward are `jax.vjp` of the same `apply` (w.r.t. the input, scale, offset) from the
state it started with; requires_grad is not declared (Haiku has no such flag). The parameters
and statistics take the input's dtype; float64 needs jax_enable_x64, which this adapter turns on.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, FrameworkModule, JaxGradients, jax_and
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-5, one_value_raises=False, counter=True)
EMA = {"running_mean": "batch_norm/~/mean_ema", "running_var": "batch_norm/~/var_ema"}
PARAMS = {"weight": "scale", "bias": "offset"}
NOT_DECLARED = {
    "untracked": "Haiku's BatchNorm always keeps and updates its moving averages (no track_running_stats)",
    "toggle_track_running_stats": "Haiku's BatchNorm has no track_running_stats",
    "momentum_none": "Haiku's decay_rate is a float (the cumulative average is not offered)",
    "requires_grad": "Haiku has no requires_grad: the caller chooses what jax.grad differentiates",
    "state_dict": "Haiku keeps params and state as dicts of its own names, no state_dict",
    "reset": "Haiku's BatchNorm has no reset_running_stats/reset_parameters",
}


def _haiku() -> tuple[Any, Any]:
    return jax_and("haiku")


class HaikuModule(JaxGradients, FrameworkModule):
    def __init__(self, config: ModuleConfig) -> None:
        self.jax, hk = _haiku()
        self.config = config
        self.decay = float(config.momentum or 0.0)  # the runner passes 1 - m (None: momentum_none is not declared)
        self.dtype = np.dtype(config.dtype)
        c, affine, eps = config.num_features, config.affine, config.eps

        def f(x: Any, is_training: bool, decay: float) -> Any:
            return hk.BatchNorm(create_scale=affine, create_offset=affine, decay_rate=decay, eps=eps,
                                data_format="channels_first")(x, is_training)

        self.transformed = hk.without_apply_rng(hk.transform_with_state(f))
        sample = np.stack([np.full(c, -1.0, self.dtype), np.full(c, 1.0, self.dtype)])  # mean 0, variance 1
        params, state = self.transformed.init(self.jax.random.PRNGKey(0), sample, True, self.decay)
        self.params = {k: np.array(v).reshape(c) for k, v in params.get("batch_norm", {}).items()}
        self.state = {name: {k: np.array(v).reshape(-1) if k != "counter" else np.array(v) for k, v in group.items()}
                      for name, group in state.items()}
        self._saved: Any = None

    def _shaped(self, params: dict, state: dict, ndim: int) -> tuple[dict, dict]:
        """Params and state in Haiku's shapes for an input of rank ndim: (1, C, 1, ...)."""
        shape = (1, self.config.num_features) + (1,) * (ndim - 2)
        p = {"batch_norm": {k: v.reshape(shape) for k, v in params.items()}} if params else {}
        s = {name: {k: v if k == "counter" else v.reshape(shape) for k, v in group.items()}
             for name, group in state.items()}
        return p, s

    def set_attribute(self, name: str, value: object) -> None:
        if name != "momentum":
            raise AttributeError(f"Haiku's BatchNorm has no {name}")
        self.decay = float(value)  # type: ignore[arg-type]  # a SetStep momentum, decay convention

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, self.dtype, order="C")
        self._saved = (x, self.training, self.state, self.decay)
        params, state = self._shaped(self.params, self.state, x.ndim)
        y, new = self.transformed.apply(params, state, x, self.training, self.decay)
        if self.training:
            self.state = {name: {k: np.array(v).reshape(-1) if k != "counter" else np.array(v)
                                 for k, v in group.items()} for name, group in new.items()}
        return np.asarray(y)

    def _function(self) -> tuple[Any, list]:
        """The last forward as a function of (x, scale, offset), from the state it started with."""
        if self._saved is None:
            raise RuntimeError("backward called without a preceding forward")
        x, training, state, decay = self._saved
        names = [k for k in ("scale", "offset") if k in self.params]
        shape = (1, self.config.num_features) + (1,) * (x.ndim - 2)
        _, shaped = self._shaped({}, state, x.ndim)

        def f(xx: Any, *wb: Any) -> Any:
            params = {"batch_norm": {k: v.reshape(shape) for k, v in zip(names, wb)}} if names else {}
            return self.transformed.apply(params, shaped, xx, training, decay)[0]

        return f, [x] + [self.params[k] for k in names]

    def get(self, name: str) -> Optional[np.ndarray | int]:
        if name == "num_batches_tracked":
            return int(self.state[EMA["running_mean"]]["counter"])
        if name in EMA:
            return np.array(self.state[EMA[name]]["average"], copy=True)
        value = self.params.get(PARAMS[name])
        return None if value is None else np.array(value, copy=True)

    def assign(self, name: str, value: np.ndarray | int) -> None:
        if name == "num_batches_tracked":
            for group in self.state.values():
                group["counter"] = np.array(int(value), group["counter"].dtype)
            return
        new = np.asarray(value, self.dtype).reshape(self.config.num_features)
        if name in EMA:
            group = dict(self.state[EMA[name]])
            group["average"] = new
            group["hidden"] = (new * (1 - self.dtype.type(self.decay) ** int(group["counter"]))).astype(self.dtype)
            self.state = {**self.state, EMA[name]: group}
        elif PARAMS[name] in self.params:
            self.params = {**self.params, PARAMS[name]: new}
        else:
            raise AttributeError(f"{name} is None")


class HaikuBackend(FrameworkBackend):
    name = "haiku"
    conventions = PROFILE
    capabilities = Capabilities(
        dtypes=frozenset({"float32", "float64"}),
        features=frozenset({"init", "set_momentum", "momentum_decay", "backward", "double_backward"}),
        reasons=NOT_DECLARED)
    install_hint = "pip install dm-haiku"
    probe = staticmethod(_haiku)

    def version(self) -> str:
        return f"dm-haiku {version('dm-haiku')}, jax {version('jax')}"

    def create(self, config: ModuleConfig) -> HaikuModule:
        return HaikuModule(config)
