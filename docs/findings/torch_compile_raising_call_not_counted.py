"""Compiled, a BatchNorm training forward that raises at run time leaves num_batches_tracked
unchanged; eager counts it.

Eager nn.BatchNorm increments num_batches_tracked before F.batch_norm refuses a float32 input
into a float16 module ("mixed dtype"), so the refused call still counts. Compiled (aot_eager
here), the increment is part of the graph, whose buffer mutations are written back only when the
whole graph has run: the refusal comes first and the counter stays 0.
"""
# requires: torch
import torch

x = torch.randn(4, 3)
eager = torch.nn.BatchNorm1d(3).half()
try:
    eager(x)
except RuntimeError as exc:
    print("eager raised:", str(exc).splitlines()[0][:100])
compiled = torch.nn.BatchNorm1d(3).half()
try:
    torch.compile(compiled, backend="aot_eager")(x)
except RuntimeError as exc:
    print("compiled raised:", str(exc).splitlines()[0][:100])
else:
    raise AssertionError("compiled: nothing raised")
print("num_batches_tracked: eager", int(eager.num_batches_tracked), "compiled", int(compiled.num_batches_tracked))
assert int(eager.num_batches_tracked) == 1 and int(compiled.num_batches_tracked) == 0
