"""An empty training batch writes NaN (or +-inf) into the running statistics.

N * spatial = 0 values per channel: torch returns an empty output and leaves running_mean and
running_var as they were. MLX updates them with the mean and variance of no values: NaN here;
in the column's channels-last arrays some come out +-inf.
"""
# requires: mlx
import mlx.core as mx
import mlx.nn as nn
import numpy as np

for shape in ((0, 2), (0, 3, 2), (0, 3, 3, 2), (4, 0, 2)):
    bn = nn.BatchNorm(2)
    y = bn(mx.zeros(shape))
    mean, var = np.array(bn.running_mean), np.array(bn.running_var)
    print(shape, "output", y.shape, "running_mean", mean, "running_var", var)
    assert y.shape == shape
    assert not np.isfinite(mean).any() and not np.isfinite(var).any()
