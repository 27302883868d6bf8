"""A scripted BatchNorm has no reset_running_stats() or reset_parameters().

torch.jit.script compiles forward and what it calls; other methods are left out unless marked
@torch.jit.export, which nn.BatchNorm's are not: both raise AttributeError on the scripted module.
"""
# requires: torch
import torch

eager = torch.nn.BatchNorm1d(3)
eager.reset_running_stats()
eager.reset_parameters()  # both exist in eager
scripted = torch.jit.script(torch.nn.BatchNorm1d(3))
for method in ("reset_running_stats", "reset_parameters"):
    try:
        getattr(scripted, method)()
    except AttributeError as exc:
        print(f"{method}: {exc}")
    else:
        raise AssertionError(f"the scripted module has {method}()")
