"""Haiku's declared conventions (runners/backends/frameworks/haiku_backend.py), checked directly.

hk.BatchNorm(decay_rate=...) keeps two ExponentialMovingAverage modules: hidden = hidden * decay
+ value * (1 - decay) (decay convention), the variance they average is the *biased* batch
variance, eps defaults to 1e-5, one value per channel is accepted, and each EMA counts its
updates (counter). The EMA's `hidden` is torch's running statistic started from 0; what eval
uses is its zero-debiased `average` (docs/findings/haiku_debiased_running_stats.py).
"""
# requires: haiku, jax
import haiku as hk
import jax
import numpy as np


def f(x, is_training):
    return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9, data_format="channels_first")(x, is_training)


t = hk.without_apply_rng(hk.transform_with_state(f))
x = np.array([[1.0], [2.0], [4.0], [7.0]], np.float32)  # one channel: mean 3.5, biased var 5.25
params, state = t.init(jax.random.PRNGKey(0), x, True)
assert state["batch_norm/~/mean_ema"]["counter"] == 0 and not np.asarray(state["batch_norm/~/mean_ema"]["hidden"]).any()
_, state = t.apply(params, state, x, True)
mean_ema, var_ema = state["batch_norm/~/mean_ema"], state["batch_norm/~/var_ema"]
# decay: hidden = 0.9 * 0 + 0.1 * 3.5 = 0.35;  biased: 0.9 * 0 + 0.1 * 5.25 = 0.525 (unbiased 7.0 would give 0.7)
np.testing.assert_allclose(np.asarray(mean_ema["hidden"]).ravel(), [0.35], rtol=1e-6)
np.testing.assert_allclose(np.asarray(var_ema["hidden"]).ravel(), [0.525], rtol=1e-6)
assert int(mean_ema["counter"]) == 1
t.apply(params, state, np.array([[3.0]], np.float32), True)  # one value per channel: no error
assert hk.BatchNorm.__init__.__defaults__[0] == 1e-5  # eps
print("haiku conventions: decay momentum, biased variance, eps 1e-5, one value accepted, an update counter")
