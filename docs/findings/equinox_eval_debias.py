"""Eval divides the running statistics by 1 - momentum**counter (mode="batch").

eqx.nn.BatchNorm(mode="batch") keeps torch's running statistics (decay convention): after one
training batch with momentum 0.9, hidden_mean = 0.1 * mean and hidden_var = 0.9 * 1 + 0.1 * var,
which is what torch's running_mean / running_var hold. Its inference path then "zero-debiases"
them (equinox/nn/_batch_norm.py: `scale = 1 - momentum**counter; mean = hidden_mean / scale;
var = hidden_var / scale`): the mean becomes the batch mean, but the variance, whose running
value started at 1 rather than 0, becomes 9 + var. torch normalises with the running values
themselves. With momentum 1 (torch's momentum 0, frozen statistics) the scale is 0 and eval
divides by zero: NaN. Before any training batch (counter 0) the statistics are used as they are.
"""
# requires: equinox, jax
import warnings

import equinox as eqx
import jax
import numpy as np

warnings.simplefilter("ignore")
x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0], [7.0, 3.0]])  # (N, C)
mean, var = x.mean(0), x.var(0)
for momentum in (0.9, 1.0):
    bn = eqx.nn.BatchNorm(2, axis_name="batch", mode="batch", momentum=momentum)
    state = eqx.nn.State(bn)
    train = jax.vmap(bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
    _, state = train(x.astype(np.float32), state)
    hm, hv = (np.asarray(v, np.float64) for v in state.get(bn.batch_state_index))
    running_mean, running_var = (1 - momentum) * mean, momentum * 1 + (1 - momentum) * var  # torch's, decay m
    np.testing.assert_allclose(hm, running_mean, rtol=1e-6)
    np.testing.assert_allclose(hv, running_var, rtol=1e-6)
    evaluate = jax.vmap(lambda xi, s, layer=bn: layer(xi, s, inference=True), axis_name="batch", in_axes=(0, None),
                        out_axes=(0, None))
    y, _ = evaluate(x.astype(np.float32), state)
    y = np.asarray(y, np.float64)
    torch_y = (x - running_mean) / np.sqrt(running_var + 1e-5)
    print(f"momentum {momentum}: eval output {y[0]}, torch's {torch_y[0]}")
    if momentum == 1.0:
        assert np.isnan(y).all()
    else:
        scale = 1 - momentum
        np.testing.assert_allclose(y, (x - hm / scale) / np.sqrt(hv / scale + 1e-5), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hv / scale, 9 + var, rtol=1e-6)
        assert not np.allclose(y, torch_y, rtol=1e-2)
