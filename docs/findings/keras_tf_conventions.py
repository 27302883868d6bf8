"""Keras 3's declared conventions (runners/backends/frameworks/keras_backend.py), checked
directly on the TensorFlow backend.

momentum weights the old value (decay, default 0.99), the moving variance takes the *biased*
batch variance, epsilon defaults to 1e-3, and there is no batch counter.
"""
# requires: tensorflow, keras
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np

x = np.array([[1.0], [2.0], [4.0], [7.0]], np.float32)  # one channel: mean 3.5, biased var 5.25
bn = keras.layers.BatchNormalization(axis=1)
assert bn.momentum == 0.99 and bn.epsilon == 1e-3
bn(x, training=True)
# decay: 0.99 * 0 + 0.01 * 3.5 = 0.035;  biased: 0.99 * 1 + 0.01 * 5.25 = 1.0425 (unbiased 7.0: 1.06)
np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), [0.035], rtol=1e-5)
np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), [1.0425], rtol=1e-5)
assert sorted(w.path.split("/")[-1] for w in bn.weights) == ["beta", "gamma", "moving_mean", "moving_variance"]
print("keras on tensorflow: decay momentum 0.99, biased moving variance, eps 1e-3, no counter")
