"""Keras 3 on TensorFlow: an empty training batch sets the moving statistics to NaN.

torch's BatchNorm leaves its running statistics unchanged for a (0, C) batch; Keras'
BatchNormalization averages over no values (NaN) and folds that into moving_mean and
moving_variance (the same on the torch backend: keras.yaml).
"""
# requires: tensorflow, keras
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np

assert keras.backend.backend() == "tensorflow"
bn = keras.layers.BatchNormalization(axis=1)
bn.build((2, 3))
bn(np.zeros((0, 3), np.float32), training=True)
moving_mean = keras.ops.convert_to_numpy(bn.moving_mean)
print("moving_mean after an empty batch:", moving_mean)
assert np.isnan(moving_mean).all()
