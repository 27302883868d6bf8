"""A float64 BatchNorm's moving statistics are updated with float32(momentum).

Paddle passes momentum to its batch_norm kernel as a float32 attribute, so a float64 layer's
update weights the old value by float32(0.9) = 0.89999998 and the batch by 1 - float32(0.9):
2.4e-7 relative off the exact 0.1 * mean (float64's own rounding is 1e-16).
"""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")
paddle.set_default_dtype("float64")
bn = paddle.nn.BatchNorm1D(3, momentum=0.9)
x = np.random.RandomState(0).randn(8, 3)
bn(paddle.to_tensor(x))
mean = x.mean(axis=0)
exact = 0.1 * mean
with_float32_momentum = (1.0 - np.float64(np.float32(0.9))) * mean
got = bn._mean.numpy()
rel = np.abs(got / exact - 1)
print("moving mean", got, "exact", exact, "relative error", rel)
assert np.all(rel > 1e-7), "the moving mean is float64-exact: the finding is gone"
np.testing.assert_allclose(got, with_float32_momentum, rtol=1e-15)
