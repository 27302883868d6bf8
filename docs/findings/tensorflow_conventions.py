"""FusedBatchNormV3's declared conventions (runners/backends/frameworks/tensorflow_backend.py),
checked directly.

exponential_avg_factor weights the new batch (torch's convention), the running variance takes
the unbiased batch variance, epsilon defaults to 1e-4, one value per channel is accepted
(variance 0), float64 data is refused, and NHWC is the layout.
"""
# requires: tensorflow
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

one = lambda v: np.full(1, v, np.float32)
x = np.array([1.0, 2.0, 4.0, 7.0], np.float32).reshape(4, 1, 1, 1)  # NHWC, one channel: mean 3.5, var 5.25 / 7.0


def fused(data, factor, **kw):
    return tf.raw_ops.FusedBatchNormV3(x=data, scale=one(1), offset=one(0), mean=one(0), variance=one(1),
                                       exponential_avg_factor=factor, is_training=True, **kw)


y, mean, var, *_ = fused(x, 0.1, epsilon=1e-5)
# weight of the new batch: 0.9 * 0 + 0.1 * 3.5 = 0.35;  unbiased: 0.9 * 1 + 0.1 * 7.0 = 1.6 (biased would give 1.425)
np.testing.assert_allclose(mean.numpy(), [0.35], rtol=1e-6)
np.testing.assert_allclose(var.numpy(), [1.6], rtol=1e-6)
y_default, *_ = tf.raw_ops.FusedBatchNormV3(x=x, scale=one(1), offset=one(0), mean=one(0), variance=one(1),
                                            is_training=True)  # epsilon left at its default
np.testing.assert_allclose(y_default.numpy().ravel(), (x.ravel() - 3.5) / np.sqrt(5.25 + 1e-4), rtol=1e-6)
_, mean1, var1, *_ = fused(np.full((1, 1, 1, 1), 2.0, np.float32), 0.5)  # one value: no error
np.testing.assert_allclose(var1.numpy(), [0.5])  # 0.5 * 1 + 0.5 * 0: variance 0, n - 1 taken as 1
try:
    fused(x.astype(np.float64), 0.1)
except tf.errors.InvalidArgumentError as exc:
    assert "half, bfloat16, float" in str(exc)
else:
    raise AssertionError("float64 accepted now: declare it")
print("FusedBatchNormV3: factor = weight of the new batch, unbiased running variance, eps 1e-4, no float64")
