"""track_running_stats is read at call time, differently from torch.

True -> False: training stops updating the running statistics, as in torch, but eval then
normalises with the *batch* statistics, where torch keeps using the (stale) buffers.
False -> True: the buffers were never created, and the next call fails with AttributeError:
'BatchNorm' object has no attribute 'running_mean' (torch keeps them None and tracks nothing).
(mlx/nn/layers/normalization.py, BatchNorm.__call__: `elif self.track_running_stats:` picks the
running statistics, `self.running_mean` is read there.)
"""
# requires: mlx
import mlx.core as mx
import mlx.nn as nn
import numpy as np

x = mx.array([[1.0, 2.0], [3.0, 6.0]])
bn = nn.BatchNorm(2)
bn.running_mean = mx.array([0.5, -0.5])
bn.running_var = mx.array([2.0, 3.0])
bn.track_running_stats = False
bn.eval()
y = np.array(bn(x))
with_buffers = (np.array([[1.0, 2.0], [3.0, 6.0]]) - [0.5, -0.5]) / np.sqrt(np.array([2.0, 3.0]) + 1e-5)  # torch
batch = np.array([[-1.0, -1.0], [1.0, 1.0]]) * np.sqrt(1 / (1 + 1e-5 / np.array([1.0, 4.0])))  # batch statistics
print("eval after True->False:", y.tolist(), "torch:", with_buffers.tolist())
np.testing.assert_allclose(y, batch, rtol=1e-5)
assert not np.allclose(y, with_buffers)

bn = nn.BatchNorm(2, track_running_stats=False)
bn.track_running_stats = True
try:
    bn(x)
except AttributeError as exc:
    print("False->True:", exc)
    assert "running_mean" in str(exc)
else:
    raise AssertionError("a False->True flip trained without error")
