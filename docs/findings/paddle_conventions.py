"""Paddle's declared conventions (runners/backends/frameworks/paddle_backend.py), checked directly.

momentum weights the old value (decay, default 0.9), the moving variance takes the *biased*
batch variance, epsilon defaults to 1e-5, and there is no batch counter.
"""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")  # "When training, we now always track global mean and variance."
x = np.array([[1.0], [2.0], [4.0], [7.0]], dtype="float32")  # one channel: mean 3.5, biased var 5.25
bn = paddle.nn.BatchNorm1D(1)
assert bn._momentum == 0.9 and bn._epsilon == 1e-5
bn(paddle.to_tensor(x))
# decay: 0.9 * 0 + 0.1 * 3.5 = 0.35;  biased: 0.9 * 1 + 0.1 * 5.25 = 1.425 (unbiased 7.0 would give 1.6)
np.testing.assert_allclose(bn._mean.numpy(), [0.35], rtol=1e-6)
np.testing.assert_allclose(bn._variance.numpy(), [1.425], rtol=1e-6)
assert set(bn.state_dict()) == {"weight", "bias", "_mean", "_variance"}  # no num_batches_tracked
print("paddle conventions: decay momentum 0.9, biased moving variance, eps 1e-5, no counter")
