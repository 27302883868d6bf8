"""Outside the matrix: FusedBatchNormV3 on an empty batch writes NaN into the running statistics.

bnconform's TensorFlow column never shows this, because KernelModule (torch's module semantics
around the op) returns before calling the op for an empty batch, as torch's own module does. A
kernel author calling the op directly gets NaN running statistics from an (0, H, W, C) batch
with exponential_avg_factor < 1, where torch leaves them unchanged.
"""
# requires: tensorflow
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

c = lambda v: np.full(3, v, np.float32)
_, mean, var, *_ = tf.raw_ops.FusedBatchNormV3(
    x=np.zeros((0, 1, 1, 3), np.float32), scale=c(1), offset=c(0), mean=c(0), variance=c(1), epsilon=1e-5,
    exponential_avg_factor=0.5, data_format="NHWC", is_training=True)
print("running mean", mean.numpy(), "running variance", var.numpy())
assert np.isnan(mean.numpy()).all()
