"""torch 2.13's channels_last CPU statistics lose the variance of float32 data at an offset.

(1, 3, 512, 512) float32 values 1e4 + N(0, 1): contiguous, running_var (momentum 1: the
unbiased batch variance) is right to 1e-6; the same values in channels_last memory give about
90 instead of 1.0 (9.9 after one step of the default momentum 0.1), and outputs off by up to 5
(the statistics are accumulated in float32 along the rows). The shapes library therefore pins channels_last on centred data only
(docs/semantics.md, "Where arithmetic runs out").
"""
# requires: torch
import numpy as np
import torch

x = torch.from_numpy(np.float32(1e4) + np.random.RandomState(5).randn(1, 3, 512, 512).astype("float32"))
exact = x.double().var(dim=(0, 2, 3), unbiased=True)
for layout in (torch.contiguous_format, torch.channels_last):
    bn = torch.nn.BatchNorm2d(3, momentum=1.0)
    bn(x.contiguous(memory_format=layout))
    err = (bn.running_var.double() - exact).abs().max().item()
    print(f"{layout}: running_var {bn.running_var.tolist()} (exact {exact.tolist()}), error {err:.3g}")
    if layout is torch.contiguous_format:
        assert err < 1e-2
    else:
        assert err > 1.0
