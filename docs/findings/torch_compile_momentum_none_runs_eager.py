"""With graph breaks allowed, torch.compile runs a momentum=None BatchNorm's training forward
eager: no compiled graph runs.

momentum=None makes the factor 1 / num_batches_tracked, read with float(): a graph break inside
the module's forward. Dynamo then runs the whole call eager (aot_eager here, with a count of the
compiled graphs that run; Inductor does the same), so the result is eager's and nothing compiled
is exercised; the same module with momentum=0.1 runs one compiled graph per forward. (With
fullgraph=True the forward is refused instead: torch_compile_fullgraph_momentum_none.py.)
"""
# requires: torch
import torch

ran = [0]


def counting(gm, example_inputs):
    from torch._dynamo.backends.registry import lookup_backend

    graph = lookup_backend("aot_eager")(gm, example_inputs)

    def run(*args):
        ran[0] += 1
        return graph(*args)

    return run


for momentum in (0.1, None):
    compiled = torch.compile(torch.nn.BatchNorm2d(3, momentum=momentum), backend=counting)
    before = ran[0]
    compiled(torch.randn(4, 3, 2, 2))
    print(f"momentum={momentum}: compiled graphs run by a training forward:", ran[0] - before)
    assert ran[0] - before == (1 if momentum else 0)
