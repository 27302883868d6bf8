"""Keras 3 `keras.layers.BatchNormalization` (channels axis 1): `keras` on the torch backend,
`keras-tf` on the TensorFlow backend.

One layer, two implementations: Keras 3 computes through its backend's ops (keras.ops.moments,
batch_normalization), so the same layer on TensorFlow is another column. `keras` takes
KERAS_BACKEND from the environment, default "torch" (already installed with bnconform; set it
to "jax" or "numpy" to test those); `keras-tf` sets it to "tensorflow" in its own worker
process (Keras reads it once, at import). From Keras 3's documentation and source
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
from typing import Any

import numpy as np

from bnconform.runners.backends.frameworks import FrameworkBackend, FrameworkModule
from bnconform.runners.backends.frameworks.tensorflow_backend import import_tensorflow, tensorflow_version
from bnconform.runners.backends.protocol import Capabilities, Conventions, ModuleConfig

PROFILE = Conventions(momentum="decay", running_var="biased", default_eps=1e-3, one_value_raises=False, counter=False)
NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _keras() -> Any:
    if os.environ.setdefault("KERAS_BACKEND", "torch") == "tensorflow":  # keras.yaml's findings are not TensorFlow's
        raise RuntimeError("KERAS_BACKEND=tensorflow: Keras on TensorFlow is the keras-tf column, with its own "
                           "manifest; the keras column runs Keras on torch (or jax, numpy)")
    import keras

    return keras


def _keras_tf() -> Any:
    """Keras on TensorFlow, or an error saying why not (TensorFlow missing, or Keras already
    imported in this process on another backend)."""
    os.environ["KERAS_BACKEND"] = "tensorflow"  # before TensorFlow, whose import imports Keras
    import_tensorflow()  # missing, it is the skip reason (Keras would fail later, at the first layer)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"keras was imported on the {keras.backend.backend()} backend before keras-tf could choose")
    return keras


class KerasModule(FrameworkModule):
    def __init__(self, config: ModuleConfig, keras: Any) -> None:
        self.keras = keras
        self.config = config
        self.layer = self.keras.layers.BatchNormalization(
            axis=1, momentum=config.momentum, epsilon=config.eps, center=config.affine, scale=config.affine,
            dtype=config.dtype)
        # 1d is built for (N, C, L): (N, C) input is fed as (N, C, 1), the same statistics.
        rank = {1: 3, 2: 4, 3: 5}[config.dim]
        self.layer.build((2, config.num_features) + (1,) * (rank - 2))

    def _variable(self, name: str) -> Any:
        return getattr(self.layer, NAMES[name], None)

    def _read(self, var: Any) -> np.ndarray:
        return np.asarray(self.keras.ops.convert_to_numpy(var.value))

    def _write(self, var: Any, value: np.ndarray) -> None:
        var.assign(value)

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


class KerasBackend(FrameworkBackend):
    name = "keras"
    conventions = PROFILE
    capabilities = Capabilities(features=frozenset({"init", "set_momentum", "momentum_decay"}))
    install_hint = "pip install keras"
    probe = staticmethod(_keras)

    def version(self) -> str:
        return f"keras {version('keras')} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'torch')})"

    def create(self, config: ModuleConfig) -> KerasModule:
        return KerasModule(config, type(self).probe())


class KerasTfBackend(KerasBackend):
    """The same layer on the TensorFlow backend: its own column, manifest and findings."""

    name = "keras-tf"
    install_hint = "pip install keras tensorflow-cpu"
    probe = staticmethod(_keras_tf)

    def version(self) -> str:
        try:  # importing TensorFlow imports Keras: the backend is chosen first, whichever is asked first
            _keras_tf()
        except Exception as exc:  # available() says why
            return f"keras-tf unavailable ({type(exc).__name__})"
        return f"keras {version('keras')} (KERAS_BACKEND=tensorflow, {tensorflow_version()})"
