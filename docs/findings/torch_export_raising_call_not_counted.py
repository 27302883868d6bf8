"""Through torch.export, a training forward that raises leaves num_batches_tracked unchanged.

Eager nn.BatchNorm increments num_batches_tracked before F.batch_norm checks the batch, so a
forward that raises ("Expected more than 1 value per channel when training") still counts.
torch.export traces the module with fake tensors and raises while exporting, before anything
runs: the module's counter stays as it was.
"""
# requires: torch
import torch

x = torch.ones(1, 3)
eager = torch.nn.BatchNorm1d(3)
try:
    eager(x)
except ValueError:
    pass
assert int(eager.num_batches_tracked) == 1  # counted, though it raised

exported = torch.nn.BatchNorm1d(3)
try:
    torch.export.export(exported, (x,)).module()(x)
except ValueError as exc:
    print("export raised:", type(exc).__name__, str(exc).splitlines()[0])
else:
    raise AssertionError("export: nothing raised")
print("num_batches_tracked: eager", int(eager.num_batches_tracked), "exported", int(exported.num_batches_tracked))
assert int(exported.num_batches_tracked) == 0
