"""Inductor's BatchNorm output at a 1e4 offset is several times less accurate than eager's.

For float32 data 1e4 + N(0, 1), eager nn.BatchNorm2d's normalised output is within ~2e-4 of the
float64 result; the output of Inductor's generated kernel (torch.compile, default backend) on
the same input is off by ~8e-4, about four times as much. In the whole-library run of
`torch-compile-fullgraph` the error reaches ~2e-3 on `stability/offset_1e4[dim=2]` and the large
offset planes of the magnitudes family, beyond those cases' float32 tolerance.
"""
# requires: torch
import torch

torch.manual_seed(111)
x = 1e4 + torch.randn(16, 3, 16, 16)
x64 = x.double()
exact = (x64 - x64.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x64.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
eager = float((torch.nn.BatchNorm2d(3)(x).detach().double() - exact).abs().max())
inductor = float((torch.compile(torch.nn.BatchNorm2d(3))(x).detach().double() - exact).abs().max())
print(f"max abs error of the output: eager {eager:.2e}, Inductor {inductor:.2e}")
assert eager < 5e-4 and inductor > 2 * eager, (eager, inductor)
