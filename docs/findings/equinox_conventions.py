"""Equinox's declared conventions (runners/backends/frameworks/equinox_backend.py), checked directly.

eqx.nn.BatchNorm(mode="batch") under jax.vmap(axis_name=...): momentum weights the old value
(decay, default 0.99), the running statistics take the *biased* batch variance, eps defaults
to 1e-5, one value per channel is accepted, and batch_counter counts the training calls.
"""
# requires: equinox, jax
import warnings

import equinox as eqx
import jax
import numpy as np

warnings.simplefilter("ignore")
bn = eqx.nn.BatchNorm(1, axis_name="batch", mode="batch", momentum=0.9)
assert bn.eps == 1e-5 and eqx.nn.BatchNorm(1, axis_name="b", mode="batch").momentum == 0.99
state = eqx.nn.State(bn)
run = jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
x = np.array([[1.0], [2.0], [4.0], [7.0]], np.float32)  # one channel: mean 3.5, biased var 5.25
y, state = run(x, state)
mean, var = (np.asarray(v) for v in state.get(bn.batch_state_index))
# decay: 0.9 * 0 + 0.1 * 3.5 = 0.35;  biased: 0.9 * 1 + 0.1 * 5.25 = 1.425 (unbiased 7.0 would give 1.6)
np.testing.assert_allclose(mean, [0.35], rtol=1e-6)
np.testing.assert_allclose(var, [1.425], rtol=1e-6)
assert int(state.get(bn.batch_counter)) == 1
y1, _ = run(np.array([[3.0]], np.float32), state)  # one value per channel: no error
print("equinox conventions: decay momentum 0.99, biased running variance, eps 1e-5, one value accepted, a counter")
