"""Keras 3 on TensorFlow flushes float32 subnormals to zero (TensorFlow's CPU kernels do).

TensorFlow runs its CPU ops with flush-to-zero and denormals-are-zero on
(tensorflow_denormals_flushed.py), and Keras's BatchNormalization is built of those ops:
- data at scale 1e-38 (magnitudes/underflow_1e_38): the outputs of the subnormal inputs are 0
  where x / sqrt(var + eps) is ~1e-36;
- data at scale 1e-20 with epsilon 1e-45 (magnitudes/underflow_tiny_eps): the variance, ~1e-40,
  and eps are subnormals, flushed to 0, and the outputs are +-inf.
torch computes both.
"""
# requires: tensorflow, keras, torch
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"  # the keras-tf column's setting
import keras
import numpy as np
import torch

for scale, eps in ((1e-38, 1e-5), (1e-20, 1e-45)):
    x = (np.random.RandomState(0).randn(1, 3, 128, 128) * scale).astype(np.float32)
    bn = keras.layers.BatchNormalization(axis=1, epsilon=eps, center=False, scale=False)
    y = keras.ops.convert_to_numpy(bn(x, training=True))
    t = torch.nn.BatchNorm2d(3, eps=eps, affine=False)(torch.from_numpy(x)).detach().numpy()
    subnormal = np.abs(x) < np.finfo(np.float32).tiny
    print(f"scale {scale:g}, eps {eps:g}: {subnormal.mean():.0%} of the inputs subnormal; keras zeros "
          f"{(y == 0).mean():.0%}, non-finite {(~np.isfinite(y)).mean():.0%}; torch zeros {(t == 0).mean():.0%}, "
          f"non-finite {(~np.isfinite(t)).mean():.0%}")
    assert np.isfinite(t).all() and (t != 0).all(), "torch computes it"
    if scale == 1e-38:
        assert (y[subnormal] == 0).all(), "subnormal inputs are not flushed now"
    else:
        assert not np.isfinite(y).any(), "the subnormal variance is not flushed now"
