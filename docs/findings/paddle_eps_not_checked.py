"""epsilon 0 or negative is accepted; torch raises ValueError ("batch_norm eps must be positive
during training" / "must be non-negative")."""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")
x = np.array([[1.0], [2.0], [4.0], [7.0]], dtype="float32")  # mean 3.5, biased var 5.25
y = paddle.nn.BatchNorm1D(1, epsilon=0.0)(paddle.to_tensor(x)).numpy()  # training, eps = 0: no error
np.testing.assert_allclose(y.ravel(), (x.ravel() - 3.5) / np.sqrt(5.25), rtol=1e-6)

print("eps=0 training:", y.ravel())
bn = paddle.nn.BatchNorm1D(1, epsilon=-0.5)
bn.eval()  # moving mean 0, variance 1: x / sqrt(1 - 0.5), no error
y = bn(paddle.to_tensor(x)).numpy()
print("eps=-0.5 eval:", y.ravel())
np.testing.assert_allclose(y.ravel(), x.ravel() / np.sqrt(0.5), rtol=1e-6)
