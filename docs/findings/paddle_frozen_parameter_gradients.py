"""Freezing one of weight and bias (or having no bias) leaves the other without a gradient.

torch gives the trainable parameter its gradient whatever the other one does; Paddle's
BatchNorm computes neither when one of them has stop_gradient=True or is absent.
"""
# requires: paddle
import warnings

import numpy as np
import paddle

warnings.simplefilter("ignore")
x0 = np.random.RandomState(0).rand(4, 3).astype("float32")


def grads(bn):
    x = paddle.to_tensor(x0, stop_gradient=False)
    bn(x).backward(paddle.to_tensor(x0))
    g = lambda t: None if t is None or t.grad is None else t.grad.numpy()
    return g(bn.weight), g(bn.bias), g(x)


w, b, dx = grads(paddle.nn.BatchNorm1D(3))
assert w is not None and b is not None  # both trainable: both have gradients

frozen_weight = paddle.nn.BatchNorm1D(3)
frozen_weight.weight.stop_gradient = True
w, b, dx = grads(frozen_weight)
print("weight frozen: grad of bias", b)
assert b is None and dx is not None, "the bias has its gradient now: the finding is gone"

frozen_bias = paddle.nn.BatchNorm1D(3)
frozen_bias.bias.stop_gradient = True
w, b, dx = grads(frozen_bias)
print("bias frozen: grad of weight", w)
assert w is None

no_bias = paddle.nn.BatchNorm1D(3, bias_attr=False)
w, b, dx = grads(no_bias)
print("bias_attr=False: weight.stop_gradient", no_bias.weight.stop_gradient, "grad of weight", w)
assert no_bias.weight.stop_gradient is False and w is None
