"""Equinox `equinox.nn.BatchNorm(mode="batch")` with its `equinox.nn.State`, on JAX's CPU backend.

From Equinox 0.13's documentation and source (equinox/nn/_batch_norm.py, class BatchNorm):
  - the layer takes one example, shape (C, *spatial), and must run under `jax.vmap` with a
    matching `axis_name`: the batch statistics are the mean over the example's spatial values,
    `lax.pmean`-ed over the named batch axis, and `pmean(mean((y - mean)^2))` for the variance
    (two passes, clipped at 0) -> the *biased* variance, over N and the spatial axes;
  - mode="batch" (the mode the docs recommend for new code; the unspecified "legacy" default
    is mode="ema" with a deprecation warning) keeps `batch_state_index = (hidden_mean,
    hidden_var)`, created as zeros and ones, and `batch_counter`, created 0; a training call
    sets hidden = hidden * momentum + batch * (1 - momentum)  -> decay convention (momentum
    default 0.99), with the biased variance as it is, and counter += 1  -> a batch counter,
    shown here as num_batches_tracked;
  - inference (`inference=True`) normalises with hidden / (1 - momentum**counter), the
    docstring's "zero-debias approach", and with hidden itself while counter is 0: that
    division is not torch's (docs/frameworks.md, "Equinox");
  - eps default 1e-5, not checked; `channelwise_affine` gives weight and bias (affine); no
    track_running_stats, no momentum=None, nothing rejects one value per channel.
The module is immutable (momentum is a static field): each call builds the layer from the
config's eps and the current momentum, with this module's weight, bias, hidden statistics and
counter put into it and its State (`eqx.tree_at`, `State.set`) and read back after the call,
so a `set_momentum` is a new layer carrying the old values, as an Equinox user changes it.
backward and double_backward are `jax.vjp` of the same call (w.r.t. the input, weight, bias),
with the state it started from; requires_grad is not declared (Equinox has no such flag:
gradients are filtered by the caller). float64 needs jax_enable_x64, which this adapter turns on
(`dtype=` then gives float64 parameters and statistics).
"""
from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, FrameworkModule, JaxGradients, jax_and
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-5, one_value_raises=False, counter=True)
AXIS = "batch"
NOT_DECLARED = {
    "untracked": "Equinox's BatchNorm always keeps and updates its statistics (no track_running_stats)",
    "toggle_track_running_stats": "Equinox's BatchNorm has no track_running_stats",
    "momentum_none": "Equinox's momentum is a float (the cumulative average is not offered)",
    "requires_grad": "Equinox has no requires_grad: the caller filters what jax.grad differentiates",
    "state_dict": "Equinox keeps parameters in the module and statistics in an eqx.nn.State, no state_dict",
    "reset": "Equinox's BatchNorm has no reset_running_stats/reset_parameters",
}


def _equinox() -> tuple[Any, Any]:
    return jax_and("equinox")


class EquinoxModule(JaxGradients, FrameworkModule):
    def __init__(self, config: ModuleConfig) -> None:
        self.jax, self.eqx = _equinox()
        self.config = config
        self.momentum = float(config.momentum or 0.0)  # the runner passes 1 - m (None: momentum_none is not declared)
        self.dtype = np.dtype(config.dtype)
        c = config.num_features
        self.weight: Optional[np.ndarray] = np.ones(c, self.dtype) if config.affine else None
        self.bias: Optional[np.ndarray] = np.zeros(c, self.dtype) if config.affine else None
        layer, state = self._layer()  # the layer's own initial values: counter 0, hidden (zeros, ones)
        self.hidden = tuple(np.array(v) for v in state.get(layer.batch_state_index))
        self.counter = int(state.get(layer.batch_counter))
        self._saved: Any = None

    def _layer(self, weight: Any = None, bias: Any = None) -> tuple[Any, Any]:
        """eqx.nn.BatchNorm of this config and momentum, holding these values, and its State."""
        c, eqx = self.config, self.eqx
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            layer = eqx.nn.BatchNorm(c.num_features, axis_name=AXIS, eps=c.eps, channelwise_affine=c.affine,
                                     momentum=self.momentum, dtype=self.dtype, mode="batch")
        if c.affine:
            w = self.weight if weight is None else weight
            b = self.bias if bias is None else bias
            layer = eqx.tree_at(lambda m: (m.weight, m.bias), layer, (w, b))
        state = eqx.nn.State(layer)
        if hasattr(self, "hidden"):
            state = state.set(layer.batch_state_index, tuple(self.jax.numpy.asarray(h) for h in self.hidden))
            state = state.set(layer.batch_counter, state.get(layer.batch_counter) + self.counter)  # keeps its (weak) type
        return layer, state

    def _call(self, x: Any, weight: Any, bias: Any, inference: bool) -> tuple[Any, Any, Any]:
        layer, state = self._layer(weight, bias)
        run = self.jax.vmap(lambda xi, s: layer(xi, s, inference=inference), axis_name=AXIS,
                            in_axes=(0, None), out_axes=(0, None))
        y, state = run(x, state)
        return y, layer, state

    def set_attribute(self, name: str, value: object) -> None:
        if name != "momentum":
            raise AttributeError(f"Equinox's BatchNorm has no {name}")
        self.momentum = float(value)  # type: ignore[arg-type]  # a SetStep momentum, decay convention

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, self.dtype, order="C")
        inference = not self.training
        self._saved = (x, inference, self.hidden, self.counter, self.momentum)
        y, layer, state = self._call(x, None, None, inference)
        if not inference:
            self.hidden = tuple(np.array(v) for v in state.get(layer.batch_state_index))
            self.counter = int(state.get(layer.batch_counter))
        return np.asarray(y)

    def _function(self) -> tuple[Any, list]:
        """The last forward as a function of (x, weight, bias), from the state it started with."""
        if self._saved is None:
            raise RuntimeError("backward called without a preceding forward")
        x, inference, hidden, counter, momentum = self._saved
        now = (self.hidden, self.counter, self.momentum)
        self.hidden, self.counter, self.momentum = hidden, counter, momentum
        layer, state = self._layer()
        self.hidden, self.counter, self.momentum = now
        run = self.jax.vmap(lambda xi, s, lay: lay(xi, s, inference=inference)[0], axis_name=AXIS,
                            in_axes=(0, None, None), out_axes=0)
        affine = self.config.affine

        def f(xx: Any, *wb: Any) -> Any:
            lay = self.eqx.tree_at(lambda m: (m.weight, m.bias), layer, tuple(wb)) if affine else layer
            return run(xx, state, lay)

        primals = [x] + ([self.weight, self.bias] if affine else [])
        return f, primals

    def get(self, name: str) -> Optional[np.ndarray | int]:
        if name == "num_batches_tracked":
            return self.counter
        value = {"weight": self.weight, "bias": self.bias, "running_mean": self.hidden[0],
                 "running_var": self.hidden[1]}[name]
        return None if value is None else np.array(value, copy=True)

    def assign(self, name: str, value: np.ndarray | int) -> None:
        c = self.config.num_features
        if name == "num_batches_tracked":
            self.counter = int(value)
        elif name in ("running_mean", "running_var"):
            mean, var = self.hidden
            new = np.asarray(value, self.dtype).reshape(c)
            self.hidden = (new, var) if name == "running_mean" else (mean, new)
        elif not self.config.affine:
            raise AttributeError(f"{name} is None")
        else:
            setattr(self, name, np.asarray(value, self.dtype).reshape(c))


class EquinoxBackend(FrameworkBackend):
    name = "equinox"
    conventions = PROFILE
    capabilities = Capabilities(
        dtypes=frozenset({"float32", "float64"}),
        features=frozenset({"init", "set_momentum", "momentum_decay", "backward", "double_backward"}),
        reasons=NOT_DECLARED)
    install_hint = "pip install equinox"
    probe = staticmethod(_equinox)

    def version(self) -> str:
        return f"equinox {version('equinox')}, jax {version('jax')} (mode='batch')"

    def create(self, config: ModuleConfig) -> EquinoxModule:
        return EquinoxModule(config)
