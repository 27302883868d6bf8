"""What MLX's BatchNorm checks about its input, where torch raises.

- Rank: the layer accepts any 2-4-D input (NC, NLC, NHWC) whatever it was meant for: there is
  no BatchNorm1d/2d, so a 4-D input into the layer of a 1-D model normalises without error,
  where torch's BatchNorm1d raises ValueError "expected 2D or 3D input (got 4D input)".
- A wrong channel count raises ValueError "[broadcast_shapes] Shapes ... cannot be broadcast",
  where torch raises RuntimeError ("running_mean should contain 3 elements not 2").
- One value per channel is refused in training only: in eval without running statistics
  (track_running_stats=False) the batch statistics of one value are used (variance 0) and the
  output is the bias, where torch raises ValueError "Expected more than 1 value per channel".
"""
# requires: mlx
import mlx.core as mx
import mlx.nn as nn
import numpy as np

bn = nn.BatchNorm(2)
y = bn(mx.ones((2, 3, 3, 2)))  # a 4-D input: no error
assert y.shape == (2, 3, 3, 2)

for track in (True, False):
    try:
        nn.BatchNorm(2, track_running_stats=track)(mx.ones((4, 3)))  # 3 channels into a 2-channel layer
    except ValueError as exc:
        print("channels:", type(exc).__name__, exc)
        assert "broadcast_shapes" in str(exc)
    else:
        raise AssertionError("a wrong channel count was accepted")

bn = nn.BatchNorm(3, track_running_stats=False)
bn.bias = mx.array([0.5, 1.0, 1.5])
bn.eval()
y = np.array(bn(mx.array([[1.0, 2.0, 3.0]])))  # one value per channel, eval, no buffers: no error
print("one value, untracked eval:", y.tolist())
np.testing.assert_allclose(y, [[0.5, 1.0, 1.5]])
