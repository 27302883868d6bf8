"""torch 2.13's CPU BatchNorm sums float32 squared deviations in float32: past 3.4e38 the
variance is +inf, so the output is the bias and the gradients through the statistics are 0.

The pair (1.5e19, -1.5e19) has a representable variance (2.25e38) but a sum of squares of
4.5e38: running_var is inf and the output is the bias (pytorch#178123). The oracle encodes
this (docs/semantics.md, "Where arithmetic runs out"); a kernel with a wider accumulator
normalises instead and fails specs/20-magnitudes.yaml.
"""
# requires: torch
import torch

bn = torch.nn.BatchNorm1d(1)
with torch.no_grad():
    bn.bias.fill_(0.5)
x = torch.tensor([[1.5e19], [-1.5e19]], dtype=torch.float32, requires_grad=True)
y = bn(x)
y.backward(torch.tensor([[1.0], [3.0]]))
print("output", y.flatten().tolist(), "running_var", bn.running_var.tolist(), "grad_input", x.grad.flatten().tolist())
assert y.flatten().tolist() == [0.5, 0.5]
assert bn.running_var.item() == float("inf")
assert x.grad.abs().max().item() == 0.0
