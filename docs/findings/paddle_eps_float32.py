"""A float64 BatchNorm normalises with float32(epsilon).

Paddle passes epsilon to its batch_norm kernel as a float32 attribute, as it does momentum
(paddle_momentum_float32.py): float32(1e-5) = 9.99999975e-06. Where a channel's variance is
small beside eps this shows at float64's precision: a channel of variance ~1e-4 is off by
~1e-9 relative (shapes/two_steps_float64[shape=4x4096], whose second batch has such channels).
"""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")
paddle.set_default_dtype("float64")
bn = paddle.nn.BatchNorm1D(3, epsilon=1e-5)
x = np.array([[1.0, 2.0, 3.0], [1.01, 2.02, 3.03], [0.99, 1.98, 2.97], [1.0, 2.0, 3.0]])  # variances 5e-5 .. 4.5e-4
got = bn(paddle.to_tensor(x)).numpy()
mean, var = x.mean(axis=0), x.var(axis=0)
exact = (x - mean) / np.sqrt(var + 1e-5)
with_float32_eps = (x - mean) / np.sqrt(var + np.float64(np.float32(1e-5)))
err = np.abs(got - exact).max()
print(f"output error against eps 1e-5: {err:.2e}; against float32(eps): {np.abs(got - with_float32_eps).max():.2e}")
assert err > 1e-10, "the output is float64-exact: the finding is gone"
np.testing.assert_allclose(got, with_float32_eps, rtol=1e-13, atol=1e-15)
