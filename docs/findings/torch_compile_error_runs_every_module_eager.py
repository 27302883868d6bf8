"""After one compiled forward raises while Dynamo traces it, every torch.compile'd module of the
process runs eager, silently (pytorch/pytorch#132923).

torch.compile(module) traces through one wrapper function shared by every compiled module
(torch/_dynamo/external_utils.py, wrap_inline's `inner`). When tracing raises, as BatchNorm's own
input check does for a 1-D input, Dynamo marks that frame's code as skipped for good, so later
forwards of any compiled module, BatchNorm or not, run eager with no compiled graph: what a
refused input does to a training process, and why bnconform's compiler columns re-enable the
frame after a raising forward and refuse a forward that ran no compiled graph.
"""
# requires: torch
import torch

ran = [0]


def counting(gm, example_inputs):  # aot_eager with a count of the compiled graphs that ran
    from torch._dynamo.backends.registry import lookup_backend

    graph = lookup_backend("aot_eager")(gm, example_inputs)

    def run(*args):
        ran[0] += 1
        return graph(*args)

    return run


def graphs_run(module, x):
    before = ran[0]
    try:
        torch.compile(module, backend=counting)(x)
    except ValueError as exc:
        print("  raised:", exc)
    return ran[0] - before


print("BatchNorm1d, valid input: compiled graphs run", first := graphs_run(torch.nn.BatchNorm1d(3), torch.randn(4, 3)))
assert first == 1
print("BatchNorm1d, a 1-D input (refused):", graphs_run(torch.nn.BatchNorm1d(3), torch.randn(4)))
after = graphs_run(torch.nn.BatchNorm1d(3), torch.randn(4, 3))
other = graphs_run(torch.nn.Linear(3, 3), torch.randn(4, 3))
print("afterwards: BatchNorm1d, valid input:", after, "compiled graphs run; nn.Linear:", other)
assert after == 0 and other == 0, (after, other)  # both ran eager
torch._dynamo.reset()
again = graphs_run(torch.nn.BatchNorm1d(3), torch.randn(4, 3))
print("after torch._dynamo.reset():", again)
assert again == 1
