"""nn.Module.compile() on a BatchNorm compiles nothing; torch.compile(module) does.

After `module.compile()` and a forward, Dynamo's counters are empty: no frame was traced, the
forward ran eager. `torch.compile(module)` (what the compiler columns use) traces and compiles
one graph for the same forward. (Seen with torch 2.13.0; backend aot_eager, so no C++ compile.)
"""
# requires: torch
import torch
from torch._dynamo.utils import counters

x = torch.randn(4, 3, 2, 2)
module = torch.nn.BatchNorm2d(3)
module.compile(backend="aot_eager")
module(x)
print("module.compile():", dict(counters["frames"]), dict(counters["stats"]))
assert not counters["frames"] and not counters["stats"]  # nothing traced
counters.clear()
torch._dynamo.reset()
torch.compile(torch.nn.BatchNorm2d(3), backend="aot_eager")(x)
print("torch.compile(module):", dict(counters["frames"]), dict(counters["stats"]))
assert counters["stats"]["unique_graphs"] == 1
