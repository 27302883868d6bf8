"""An empty training batch (N * spatial = 0) writes NaN into the moving averages, and its scale
gradient is NaN.

torch returns an empty output, leaves its running statistics and gives zero weight and bias
gradients. Haiku's mean of no values is NaN, and both EMAs take it (hidden and average NaN from
then on). The layer computes (x - mean) * (scale * rsqrt(var + eps)) + offset, so the gradient
of scale is sum(dy * (x - mean)) * rsqrt(var + eps) = 0 * rsqrt(NaN) = NaN; offset's is 0.
"""
# requires: haiku, jax
import haiku as hk
import jax
import numpy as np


def f(x, is_training):
    return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9, data_format="channels_first")(x, is_training)


t = hk.without_apply_rng(hk.transform_with_state(f))
params, state = t.init(jax.random.PRNGKey(0), np.array([[-1.0, -1.0], [1.0, 1.0]], np.float32), True)
for shape in ((0, 2), (0, 2, 3), (4, 2, 0)):
    s = {k: {n: np.asarray(a).reshape((1, 2) + (1,) * (len(shape) - 2)) if n != "counter" else a for n, a in v.items()}
         for k, v in state.items()}
    p = {"batch_norm": {n: np.asarray(a).reshape((1, 2) + (1,) * (len(shape) - 2)) for n, a in params["batch_norm"].items()}}
    y, s = t.apply(p, s, np.zeros(shape, np.float32), True)
    mean, var = (np.asarray(s[f"batch_norm/~/{n}"]["average"]).ravel() for n in ("mean_ema", "var_ema"))
    print(shape, "output", y.shape, "moving mean", mean, "moving var", var)
    assert y.shape == shape and np.isnan(mean).all() and np.isnan(var).all()

g = jax.grad(lambda p: t.apply(p, state, np.zeros((0, 2), np.float32), True)[0].sum())(params)["batch_norm"]
print("gradients of an empty batch: scale", np.asarray(g["scale"]).ravel(), "offset", np.asarray(g["offset"]).ravel())
assert np.isnan(np.asarray(g["scale"])).all() and not np.asarray(g["offset"]).any()
