"""JAX's CPU backend (XLA) flushes float32 subnormals to zero, so BatchNorm of tiny data breaks.

float32's smallest normal number is 1.18e-38. Data at scale 1e-38 (magnitudes/underflow_1e_38)
is mostly subnormal: XLA reads and writes those as 0, so the layer's outputs that should be
~1e-36 come out 0. At scale 1e-20 the variance (~1e-40) is subnormal, and with eps = 1e-45
(also subnormal) both are 0: rsqrt(0) = inf and the output is +-inf
(magnitudes/underflow_tiny_eps). torch's CPU kernel keeps subnormals.
"""
# requires: equinox, jax, torch
import warnings

import equinox as eqx
import jax
import numpy as np
import torch

warnings.simplefilter("ignore")
assert float(jax.numpy.asarray(np.float32(3e-39)) + 0) == 0.0  # the flush itself
rs = np.random.RandomState(0)
for scale, eps in ((1e-38, 1e-5), (1e-20, 1e-45)):
    x = (rs.randn(16, 3, 8, 8) * scale).astype(np.float32)
    bn = eqx.nn.BatchNorm(3, axis_name="batch", mode="batch", eps=eps, channelwise_affine=False)
    y, _ = jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, eqx.nn.State(bn))
    y = np.asarray(y)
    t = torch.nn.BatchNorm2d(3, eps=eps, affine=False)(torch.from_numpy(x)).detach().numpy()
    print(f"scale {scale:g}, eps {eps:g}: equinox {y.ravel()[:3]}, torch {t.ravel()[:3]}")
    assert np.isfinite(t).all() and (np.abs(t) > 0).mean() > 0.9
    if scale == 1e-38:
        assert (y == 0).mean() > 0.5  # most outputs flushed to 0
    else:
        assert np.isinf(y).all()
