"""torch.compile(fullgraph=True) cannot compile a training forward with momentum=None.

momentum=None makes nn.BatchNorm use the cumulative average, its factor 1 / num_batches_tracked
a Python float read from the counter tensor: data-dependent. With graph breaks allowed Dynamo
breaks the graph there and the forward runs; with fullgraph=True it raises
torch._dynamo.exc.UserError ("Could not guard on data-dependent expression").
"""
# requires: torch
import torch

x = torch.randn(8, 3)
eager = torch.nn.BatchNorm1d(3, momentum=None)
eager(x)  # fine
torch.compile(torch.nn.BatchNorm1d(3, momentum=None))(x)  # fine: a graph break
torch._dynamo.reset()  # else the graph-broken code just compiled serves the fullgraph call too
try:
    torch.compile(torch.nn.BatchNorm1d(3, momentum=None), fullgraph=True)(x)
except torch._dynamo.exc.UserError as exc:
    print("fullgraph:", type(exc).__name__, str(exc).splitlines()[0][:100])
    assert "data-dependent" in str(exc)
else:
    raise AssertionError("fullgraph compiled momentum=None")
