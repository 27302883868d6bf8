"""Flax's BatchNorm of tiny float32 data breaks: JAX's CPU backend (XLA) flushes subnormals to zero.

The same flush as in equinox_subnormals_flushed.py, through flax.linen.BatchNorm: data at scale
1e-38 (magnitudes/underflow_1e_38, mostly below float32's smallest normal 1.18e-38) reads as 0,
so outputs of ~1e-36 come out 0; at scale 1e-20 with epsilon 1e-45
(magnitudes/underflow_tiny_eps) the variance (~1e-40) and eps are flushed, rsqrt(0) = inf and
the output is +-inf. torch's CPU kernel keeps subnormals.
"""
# requires: flax, jax, torch
import warnings

import flax.linen as nn
import jax
import numpy as np
import torch

warnings.simplefilter("ignore")
rs = np.random.RandomState(0)
for scale, eps in ((1e-38, 1e-5), (1e-20, 1e-45)):
    x = (rs.randn(16, 3, 8, 8) * scale).astype(np.float32)
    bn = nn.BatchNorm(axis=1, epsilon=eps, use_bias=False, use_scale=False, use_running_average=False)
    variables = bn.init(jax.random.PRNGKey(0), x)
    y, _ = bn.apply(variables, x, mutable=["batch_stats"])
    y = np.asarray(y)
    t = torch.nn.BatchNorm2d(3, eps=eps, affine=False)(torch.from_numpy(x)).detach().numpy()
    subnormal = np.abs(x) < np.finfo(np.float32).tiny
    print(f"scale {scale:g}, eps {eps:g}: {subnormal.mean():.0%} of the inputs subnormal; flax zeros "
          f"{(y == 0).mean():.0%}, non-finite {(~np.isfinite(y)).mean():.0%}; torch zeros {(t == 0).mean():.0%}")
    assert np.isfinite(t).all() and (t != 0).all(), "torch computes it"
    if scale == 1e-38:
        assert (y[subnormal] == 0).all(), "subnormal inputs are not flushed now"
    else:
        assert np.isinf(y).all(), "the subnormal variance is not flushed now"
