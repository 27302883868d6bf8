"""A scripted BatchNorm cannot change momentum or track_running_stats at run time.

nn.BatchNorm lists both in __constants__; torch.jit.script bakes them into the module, so
assigning either raises RuntimeError ("Can't set constant 'momentum'"), where an eager module
takes the new value (a momentum schedule, tracking flipped off for fine-tuning).
"""
# requires: torch
import torch

eager = torch.nn.BatchNorm2d(3)
eager.momentum = 0.5
eager.track_running_stats = False  # both fine in eager
for name, value in (("momentum", 0.5), ("track_running_stats", False)):
    scripted = torch.jit.script(torch.nn.BatchNorm2d(3))
    try:
        setattr(scripted, name, value)
    except RuntimeError as exc:
        print(f"{name}: {exc}")
        assert f"Can't set constant '{name}'" in str(exc)
    else:
        raise AssertionError(f"the scripted module took {name} = {value}")
