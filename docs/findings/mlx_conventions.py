"""MLX's declared conventions (runners/backends/frameworks/mlx_backend.py), checked directly.

momentum weights the new batch (torch's convention, default 0.1), the running variance takes the
*unbiased* batch variance (mx.var with ddof=1), eps defaults to 1e-5, one value per channel in
training raises ValueError (MLX's own words), the input is channels-last, and there is no batch
counter.
"""
# requires: mlx
import mlx.core as mx
import mlx.nn as nn
import numpy as np

bn = nn.BatchNorm(1)
assert bn.momentum == 0.1 and bn.eps == 1e-5
x = mx.array([[1.0], [2.0], [4.0], [7.0]])  # (N, C): mean 3.5, biased var 5.25, unbiased 7.0
y = bn(x)
# torch's convention: 0.9 * 0 + 0.1 * 3.5 = 0.35;  unbiased: 0.9 * 1 + 0.1 * 7.0 = 1.6 (biased would give 1.425)
np.testing.assert_allclose(np.array(bn.running_mean), [0.35], rtol=1e-6)
np.testing.assert_allclose(np.array(bn.running_var), [1.6], rtol=1e-6)
np.testing.assert_allclose(np.array(y)[:, 0], (np.array([1, 2, 4, 7]) - 3.5) / np.sqrt(5.25 + 1e-5), rtol=1e-5)
assert set(bn.parameters()) == {"weight", "bias", "running_mean", "running_var"}  # no num_batches_tracked
assert set(bn.trainable_parameters()) == {"weight", "bias"}  # the running statistics are frozen
try:
    bn(mx.array([[1.0]]))
except ValueError as exc:
    assert "more than one value per channel" in str(exc), exc
else:
    raise AssertionError("one value per channel in training was accepted")
# channels-last: (N, L, C) with C = 2 normalises over N and L per channel
z = np.array(nn.BatchNorm(2)(mx.array(np.arange(12, dtype=np.float32).reshape(2, 3, 2))))
assert abs(z[..., 0].mean()) < 1e-6 and abs(z[..., 1].mean()) < 1e-6
print("mlx conventions: torch momentum 0.1, unbiased running variance, eps 1e-5, ValueError for one value, no counter")
