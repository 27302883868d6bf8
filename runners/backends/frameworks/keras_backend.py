"""Keras 3 `keras.layers.BatchNormalization` (channels axis 1), on a backend without TensorFlow.

KERAS_BACKEND defaults to "torch" here (already installed with bnconform); set it to "jax" or
"numpy" to test those. From Keras 3's documentation and source
(keras/src/layers/normalization/batch_normalization.py):
  - momentum (default 0.99) weights the *old* value:
    moving_mean = moving_mean * momentum + mean * (1 - momentum)   -> decay convention;
  - mean, variance = ops.moments(inputs, axes=reduction_axes)       -> *biased* variance, and
    moving_variance is updated with it;
  - epsilon default 1e-3; center/scale give beta/gamma (affine);
  - no num_batches_tracked, no track_running_stats (every training call updates the moving
    statistics), no momentum=None, and nothing rejects one value per channel.
Capabilities not declared (skipped with that reason): untracked, toggling track_running_stats,
momentum=None, state_dict, resets, requires_grad, backward, torch's exception types.
"""
from __future__ import annotations

import os
from importlib.metadata import version
from typing import Any, Optional

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, FrameworkModule
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-3, one_value_raises=False, counter=False)
NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


class KerasModule(FrameworkModule):
    def __init__(self, config: ModuleConfig) -> None:
        self.keras = _keras()
        self.config = config
        self.layer = self.keras.layers.BatchNormalization(
            axis=1, momentum=config.momentum, epsilon=config.eps, center=config.affine, scale=config.affine,
            dtype=config.dtype)
        # 1d is built for (N, C, L): (N, C) input is fed as (N, C, 1), the same statistics.
        rank = {1: 3, 2: 4, 3: 5}[config.dim]
        self.layer.build((2, config.num_features) + (1,) * (rank - 2))

    def _var(self, name: str) -> Any:
        return getattr(self.layer, NAMES[name], None)

    def set_attribute(self, name: str, value: object) -> None:
        if name != "momentum":
            raise AttributeError(f"Keras BatchNormalization has no {name}")
        self.layer.momentum = value

    def forward(self, x: np.ndarray) -> np.ndarray:
        flat = self.config.dim == 1 and x.ndim == 2
        y = self.layer(x[..., None] if flat else x, training=self.training)
        y = np.asarray(self.keras.ops.convert_to_numpy(y))
        return y[..., 0] if flat else y

    def backward(self, grad_output: np.ndarray) -> dict:  # pragma: no cover - not declared
        raise NotImplementedError

    def get(self, name: str) -> Optional[np.ndarray | int]:
        if name == "num_batches_tracked":
            return None
        var = self._var(name)
        return None if var is None else np.asarray(self.keras.ops.convert_to_numpy(var.value)).copy()

    def assign(self, name: str, value: np.ndarray | int) -> None:
        var = self._var(name)
        if var is None:
            raise AttributeError(f"{name} is None")
        var.assign(np.asarray(value, dtype=self.config.dtype).reshape(var.shape))


class KerasBackend(FrameworkBackend):
    name = "keras"
    conventions = PROFILE
    capabilities = Capabilities(features=frozenset({"init", "set_momentum", "momentum_decay"}))
    install_hint = "pip install keras"
    probe = staticmethod(_keras)

    def version(self) -> str:
        return f"keras {version('keras')} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'torch')})"

    def create(self, config: ModuleConfig) -> KerasModule:
        return KerasModule(config)
