"""The batch variance is one pass, mean(x^2) - mean(x)^2, in the input's dtype.

On the golden two values 9999 and 10001 (float32) mean(x^2) and mean(x)^2 are both 99999999
once rounded to float32 (spacing 8), so the variance is 0 and the layer outputs -316.2 and
+316.2 (1/sqrt(eps)) instead of -1 and +1 (stability/offset_1e4_golden). On 1e4 + N(0,1) data
the variance comes out a multiple of float32's spacing at 1e8 (0, 8, 16, ...) instead of ~1.
"""
# requires: haiku, jax
import haiku as hk
import jax
import numpy as np


def f(x, is_training):
    return hk.BatchNorm(create_scale=False, create_offset=False, decay_rate=0.0, data_format="channels_first")(x, is_training)


t = hk.without_apply_rng(hk.transform_with_state(f))
x = np.array([[9999.0], [10001.0]], np.float32)
params, state = t.init(jax.random.PRNGKey(0), x, True)
y, state = t.apply(params, state, x, True)
var = float(np.asarray(state["batch_norm/~/var_ema"]["average"]).ravel()[0])
print("golden 9999/10001: output", np.asarray(y).ravel(), "variance", var, "(two-pass: 1.0)")
assert var == 0.0 and abs(abs(float(np.asarray(y).ravel()[0])) - 316.2) < 0.1
z = np.float32(1e4) + np.random.RandomState(0).randn(64, 3, 64).astype(np.float32)
_, state = t.apply(params, t.init(jax.random.PRNGKey(0), z, True)[1], z, True)
v = np.asarray(state["batch_norm/~/var_ema"]["average"]).ravel()
print("1e4 + N(0,1): variance", v, "(float64 two-pass:", z.astype(np.float64).var(axis=(0, 2)), ")")
assert (np.abs(v - 1) > 0.2).any() and (v % 8 == 0).all()
