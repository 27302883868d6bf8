"""Once torch.compile has seen BatchNorm inputs of two shapes, its channel-mismatch error names a
symbolic size ("should contain s50 elements") instead of the input's channel count.

Eager, and a first compile, raise "running_mean should contain 3 elements not 2" (compiled: inside
a TorchRuntimeError, as Dynamo runs F.batch_norm on fake tensors). After compiled forwards with
two input shapes (of two channel counts), Dynamo traces the next one with dynamic sizes (automatic dynamic shapes), and
the same refusal says "running_mean should contain s<N> elements not 2": which message a user
gets depends on what the process compiled before (aot_eager here; Inductor does the same).
"""
# requires: torch
import re

import torch


def mismatch():
    try:
        torch.compile(torch.nn.BatchNorm1d(2), backend="aot_eager")(torch.randn(4, 3))
    except RuntimeError as exc:
        return re.search(r"running_mean should contain \S+ elements not 2", str(exc)).group(0)
    raise AssertionError("nothing raised")


first = mismatch()
print("first compile:", first)
assert first == "running_mean should contain 3 elements not 2"
torch._dynamo.reset()
for n, c in ((5, 3), (6, 4)):  # two shapes before, the channel counts too: the next trace has dynamic sizes
    torch.compile(torch.nn.BatchNorm1d(c), backend="aot_eager")(torch.randn(n, c))
later = mismatch()
print("after two other shapes:", later)
assert re.fullmatch(r"running_mean should contain s\d+ elements not 2", later), later
