"""TensorFlow's CPU kernels flush float32 subnormals to zero, inputs and results alike.

TensorFlow runs its CPU ops with the processor's flush-to-zero and denormals-are-zero modes on,
so a float32 value below 1.2e-38 (the smallest normal) reads as 0 and a result that small
becomes 0. In BatchNorm this shows twice (tf.raw_ops.FusedBatchNormV3, as the column calls it):
- data at scale 1e-38 (magnitudes/underflow_1e_38): the subnormal inputs, most of them, come out
  0 where x / sqrt(var + eps) is ~1e-36;
- data at scale 1e-20 with eps 1e-45 (magnitudes/underflow_tiny_eps): the variance, ~1e-40, and
  eps are subnormals, flushed to 0, and the output is +-inf.
torch computes both (its outputs are finite and, for the first, nonzero).
"""
# requires: tensorflow, torch
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"  # the column's setting
import numpy as np
import tensorflow as tf
import torch

tiny = np.array([1e-39, -5e-39, 2e-38], np.float32)  # two subnormals and a normal
print("tf.multiply(x, 1):", tf.multiply(tiny, np.float32(1)).numpy())
assert np.array_equal(tf.multiply(tiny, np.float32(1)).numpy(), tiny * [0, 0, 1]), "subnormals are kept now"

c = lambda v: np.full(3, v, np.float32)
for scale, eps in ((1e-38, 1e-5), (1e-20, 1e-45)):
    x = (np.random.RandomState(0).randn(1, 3, 128, 128) * scale).astype(np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = tf.raw_ops.FusedBatchNormV3(x=nhwc, scale=c(1), offset=c(0), mean=c(0), variance=c(1), epsilon=eps,
                                    exponential_avg_factor=1.0, data_format="NHWC", is_training=True)[0].numpy()
    t = torch.nn.BatchNorm2d(3, eps=eps, affine=False)(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    subnormal = np.abs(nhwc) < np.finfo(np.float32).tiny
    print(f"scale {scale:g}, eps {eps:g}: {subnormal.mean():.0%} of the inputs subnormal; tf zeros "
          f"{(y == 0).mean():.0%}, tf non-finite {(~np.isfinite(y)).mean():.0%}; torch non-finite "
          f"{(~np.isfinite(t)).mean():.0%}, zeros {(t == 0).mean():.0%}")
    assert np.isfinite(t).all() and (t != 0).all(), "torch computes it"
    if scale == 1e-38:
        assert (y[subnormal] == 0).all(), "subnormal inputs are not flushed now"
    else:
        assert not np.isfinite(y).any(), "the subnormal variance is not flushed now"
