"""The running statistics are zero-debiased: the first batch becomes them outright, and the
initial values (or values put into the state) carry no weight.

hk.BatchNorm's ExponentialMovingAverage modules (zero_debias=True, not settable through
BatchNorm) keep hidden = hidden * d + value * (1 - d), starting from 0, and
average = hidden / (1 - d**counter); eval normalises with `average`. After k training batches
average = sum_i (1-d) d^(k-i) b_i / (1 - d^k), where torch's running statistic is
d^k r_0 + sum_i (1-d) d^(k-i) b_i (r_0 = 0 for the mean, 1 for the variance). With d = 0.9,
one batch of mean 3.5 and biased variance 5.25 gives average 3.5 and 5.25; torch gives 0.35
and 1.425 (with its unbiased 7.0: 1.6). Eval therefore normalises with other statistics than
torch's, and an `average` written into the state (say torch's running statistics) is replaced
at the next training batch by one computed from `hidden` alone.
"""
# requires: haiku, jax
import haiku as hk
import jax
import numpy as np

d = 0.9


def f(x, is_training):
    return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=d, data_format="channels_first")(x, is_training)


t = hk.without_apply_rng(hk.transform_with_state(f))
x1 = np.array([[1.0], [2.0], [4.0], [7.0]], np.float32)  # mean 3.5, biased var 5.25
x2 = np.array([[0.0], [2.0], [2.0], [4.0]], np.float32)  # mean 2.0, biased var 2.0
params, state = t.init(jax.random.PRNGKey(0), x1, True)
state = {k: dict(v) for k, v in state.items()}
for name, torch_initial in (("mean_ema", 0.0), ("var_ema", 1.0)):  # put torch's initial values in
    state[f"batch_norm/~/{name}"]["average"] = np.full((1, 1), torch_initial, np.float32)
_, state = t.apply(params, state, x1, True)
avg = lambda s, n: float(np.asarray(s[f"batch_norm/~/{n}"]["average"]).ravel()[0])
print("after one batch: average", avg(state, "mean_ema"), avg(state, "var_ema"), "(torch, decay 0.9: 0.35, 1.425 biased)")
np.testing.assert_allclose([avg(state, "mean_ema"), avg(state, "var_ema")], [3.5, 5.25], rtol=1e-6)
_, state = t.apply(params, state, x2, True)
expected = [((1 - d) * d * 3.5 + (1 - d) * 2.0) / (1 - d**2), ((1 - d) * d * 5.25 + (1 - d) * 2.0) / (1 - d**2)]
torch_like = [d * 0.35 + (1 - d) * 2.0, d * 1.425 + (1 - d) * 2.0]
print("after two batches:", avg(state, "mean_ema"), avg(state, "var_ema"), "debiased", expected, "torch-like", torch_like)
np.testing.assert_allclose([avg(state, "mean_ema"), avg(state, "var_ema")], expected, rtol=1e-5)
y, _ = t.apply(params, state, np.array([[3.0]], np.float32), False)  # eval normalises with `average`
np.testing.assert_allclose(np.asarray(y).ravel(), (3.0 - expected[0]) / np.sqrt(expected[1] + 1e-5), rtol=1e-5)
assert not np.allclose(expected, torch_like, rtol=1e-2)
