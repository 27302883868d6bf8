"""Keras 3 on TensorFlow computes a float64 layer in float64 and the variance in two passes.

The same layer on the torch backend (the `keras` column) computes float64 in float32
(keras.backend.result_type("float64", "float32") is "float32" there) and the variance as
E[x^2] - E[x]^2, so that 9999 / 10001 normalises to +-316 (keras.yaml). On TensorFlow both
come out as torch's: this script shows the TensorFlow side, the matrix the difference.
"""
# requires: tensorflow, keras
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np

assert keras.backend.result_type("float64", "float32") == "float64"
x = np.random.RandomState(0).randn(8, 3, 1)
bn = keras.layers.BatchNormalization(axis=1, epsilon=1e-5, dtype="float64")
y = keras.ops.convert_to_numpy(bn(x, training=True))
exact = (x - x.mean((0, 2), keepdims=True)) / np.sqrt(x.var((0, 2), keepdims=True) + 1e-5)
print("float64 output error", np.abs(y - exact).max())
assert y.dtype == np.float64 and np.abs(y - exact).max() < 1e-12
# stability/offset_1e4_golden: 9999 and 10001 in float32, mean 1e4, variance 1
g = np.array([[9999.0], [10001.0]], np.float32)
yg = keras.ops.convert_to_numpy(keras.layers.BatchNormalization(axis=1, epsilon=1e-5)(g, training=True))
print("9999/10001 ->", yg.ravel())
np.testing.assert_allclose(yg.ravel(), [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)], rtol=1e-5)
