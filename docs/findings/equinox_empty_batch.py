"""An empty training batch (N * spatial = 0) writes NaN into the running statistics.

torch returns an empty output and leaves running_mean and running_var as they were; equinox's
mean of no values is NaN, and hidden = hidden * momentum + NaN * (1 - momentum).
"""
# requires: equinox, jax
import warnings

import equinox as eqx
import jax
import numpy as np

warnings.simplefilter("ignore")
for shape in ((0, 2), (0, 2, 3), (4, 2, 0)):
    bn = eqx.nn.BatchNorm(2, axis_name="batch", mode="batch", momentum=0.9)
    state = eqx.nn.State(bn)
    run = jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
    y, state = run(np.zeros(shape, np.float32), state)
    mean, var = (np.asarray(v) for v in state.get(bn.batch_state_index))
    print(shape, "output", y.shape, "running mean", mean, "running var", var)
    assert y.shape == shape and np.isnan(mean).all() and np.isnan(var).all()
