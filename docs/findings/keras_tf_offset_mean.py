"""Keras 3 on TensorFlow reduces float32 data in float32: the batch mean near 1e4 is off by 1.8e-2.

(64, 3, 64) float32 values 1e4 + N(0,1) (stability/offset_1e4[dim=1]): keras.ops.moments on
TensorFlow gives a mean up to 1.8e-2 off the float64 mean (torch's BatchNorm: 4.6e-4), so the
output is off by 1.2e-2 to 1.9e-2 against a 2e-3 tolerance. Its variance is taken around that
mean (two passes), so it stays near 1 -- unlike Keras on the torch backend, whose one-pass
E[x^2] - E[x]^2 comes out a multiple of 8 here (keras.yaml).
"""
# requires: tensorflow, keras
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np

x = np.float32(1e4) + np.random.RandomState(111).randn(64, 3, 64).astype(np.float32)
mean, var = (keras.ops.convert_to_numpy(t) for t in keras.ops.moments(x, axes=(0, 2)))
exact_mean = x.astype(np.float64).mean(axis=(0, 2))
exact_var = x.astype(np.float64).var(axis=(0, 2))
print("mean error", np.abs(mean - exact_mean).max(), "variance", var, "exact", exact_var)
assert np.abs(mean - exact_mean).max() > 5e-3, "the mean is accurate now: the finding is gone"
np.testing.assert_allclose(var, exact_var, rtol=1e-3)  # two-pass: the variance survives
