"""Paddle's training BatchNorm outputs inf and NaN when var + eps is a float32 subnormal, though it
computes that variance right.

float32 data at scale 1e-20 have a variance of ~1e-40, below float32's smallest normal 1.2e-38;
with epsilon 1e-45 (magnitudes/underflow_tiny_eps) var + eps is a subnormal. The moving
variance (momentum 0: the batch's) is that subnormal, right to 1e-5, but the training output is
+-inf and NaN: its 1/sqrt(var + eps) is +inf. In eval mode, with that moving variance, the output
is right; paddle.rsqrt of the same subnormal is finite; torch is right in both modes.
"""
# requires: paddle, torch
import warnings

import numpy as np
import paddle
import torch

warnings.simplefilter("ignore")
x = (np.random.RandomState(0).randn(1, 3, 16384) * 1e-20).astype(np.float32)
bn = paddle.nn.BatchNorm1D(3, momentum=0.0, epsilon=1e-45)  # decay 0: the moving variance is the batch's
y = bn(paddle.to_tensor(x)).numpy()
moving_var = bn._variance.numpy()
exact_var = x.astype(np.float64).var(axis=(0, 2))
print("training output", y[0, 0, :4], "moving variance", moving_var, "exact", exact_var)
np.testing.assert_allclose(moving_var, exact_var, rtol=1e-4)  # the variance itself is right
assert not np.isfinite(y).any(), "the training output is finite now: the finding is gone"
bn.eval()
y_eval = bn(paddle.to_tensor(x)).numpy()
moving_mean = bn._mean.numpy().astype(np.float64)[None, :, None]
expected = (x - moving_mean) / np.sqrt(moving_var.astype(np.float64))[None, :, None]
np.testing.assert_allclose(y_eval, expected, rtol=1e-4, atol=1e-4)  # eval with that variance is right
assert np.isfinite(paddle.rsqrt(paddle.to_tensor(moving_var)).numpy()).all()
tbn = torch.nn.BatchNorm1d(3, eps=1e-45, affine=False)
assert torch.isfinite(tbn(torch.from_numpy(x))).all(), "torch is finite here"
