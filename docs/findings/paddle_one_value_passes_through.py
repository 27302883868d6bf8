"""One value per channel in training is not refused: the input comes back unchanged.

torch raises "Expected more than 1 value per channel when training". Paddle's kernel skips
the normalisation when N * spatial == 1: y = x (weight and bias not applied either), and the
moving statistics stay as they were.
"""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")
for cls, shape in (("BatchNorm1D", (1, 3)), ("BatchNorm1D", (1, 3, 1)), ("BatchNorm2D", (1, 3, 1, 1))):
    bn = getattr(paddle.nn, cls)(3)
    bn.weight.set_value(np.full(3, 2.0, "float32"))
    bn.bias.set_value(np.full(3, 0.5, "float32"))
    x = np.arange(3, dtype="float32").reshape(shape) + 1.0
    y = bn(paddle.to_tensor(x)).numpy()  # no exception
    print(cls, shape, "x", x.ravel(), "-> y", y.ravel(), "moving mean", bn._mean.numpy())
    np.testing.assert_array_equal(y, x)  # not 0.5 (= bias, variance 0), not an error: x itself
    np.testing.assert_array_equal(bn._mean.numpy(), np.zeros(3, "float32"))
    np.testing.assert_array_equal(bn._variance.numpy(), np.ones(3, "float32"))
