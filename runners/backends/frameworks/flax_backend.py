"""Flax linen `flax.linen.BatchNorm` (feature axis 1), on JAX's CPU backend.

From Flax's documentation and source (flax/linen/normalization.py):
  - momentum (default 0.99) is the decay of the running average:
    ra_mean = momentum * ra_mean + (1 - momentum) * mean              -> decay convention;
  - the variance is the *biased* batch variance, and the running variance takes it as is;
    with use_fast_variance=True (the default) it is computed as E[x^2] - E[x]^2;
  - epsilon default 1e-5; use_scale/use_bias give the affine parameters;
  - train/eval is the `use_running_average` call argument; no counter, no untracked mode, no
    momentum=None, nothing rejects one value per channel.
The state lives in the `batch_stats` collection, kept here between calls. float64 needs
jax_enable_x64, which this adapter turns on. Capabilities not declared as for Keras.
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Optional, cast

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, FrameworkModule, jax_and
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-5, one_value_raises=False, counter=False)
WHERE = {"weight": ("params", "scale"), "bias": ("params", "bias"),
         "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _flax() -> tuple[Any, Any]:
    return jax_and("flax.linen")


class FlaxModule(FrameworkModule):
    def __init__(self, config: ModuleConfig) -> None:
        self.jax, self.nn = _flax()
        self.config = config
        self.momentum = config.momentum
        self.dtype = np.dtype(config.dtype)
        sample = np.zeros((2, config.num_features), self.dtype)
        self.vars = self._module().init(self.jax.random.PRNGKey(0), sample, use_running_average=True)
        self.vars = self.jax.tree_util.tree_map(np.asarray, dict(self.vars))

    def _module(self) -> Any:
        c = self.config
        return self.nn.BatchNorm(axis=1, momentum=self.momentum, epsilon=c.eps, use_bias=c.affine, use_scale=c.affine,
                                 dtype=c.dtype, param_dtype=c.dtype)

    def set_attribute(self, name: str, value: object) -> None:
        if name != "momentum":
            raise AttributeError(f"flax BatchNorm has no {name}")
        self.momentum = cast(Optional[float], value)  # a SetStep momentum, in the decay convention

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, self.dtype)
        if self.training:
            y, updates = self._module().apply(self.vars, x, use_running_average=False, mutable=["batch_stats"])
            self.vars = {**self.vars, "batch_stats": self.jax.tree_util.tree_map(np.asarray, dict(updates["batch_stats"]))}
        else:
            y = self._module().apply(self.vars, x, use_running_average=True)
        return np.asarray(y)

    def backward(self, grad_output: np.ndarray) -> dict:  # pragma: no cover - not declared
        raise NotImplementedError

    def get(self, name: str) -> Optional[np.ndarray | int]:
        if name == "num_batches_tracked":
            return None
        coll, key = WHERE[name]
        value = self.vars.get(coll, {}).get(key)
        return None if value is None else np.array(value, copy=True)

    def assign(self, name: str, value: np.ndarray | int) -> None:
        coll, key = WHERE[name]
        if key not in self.vars.get(coll, {}):
            raise AttributeError(f"{name} is None")
        group = dict(self.vars[coll])
        group[key] = np.asarray(value, self.dtype).reshape(np.shape(group[key]))
        self.vars = {**self.vars, coll: group}


class FlaxBackend(FrameworkBackend):
    name = "flax"
    conventions = PROFILE
    capabilities = Capabilities(features=frozenset({"init", "set_momentum", "momentum_decay"}))
    install_hint = "pip install flax"
    probe = staticmethod(_flax)

    def version(self) -> str:
        return f"flax {version('flax')}, jax {version('jax')}"

    def create(self, config: ModuleConfig) -> FlaxModule:
        return FlaxModule(config)
