"""A scripted BatchNorm raises torch.jit.Error where eager nn.BatchNorm raises ValueError.

One value per channel in training, a non-positive eps in training and an input of the wrong
rank each raise ValueError in eager torch; through torch.jit.script the same checks reach the
caller as torch.jit.Error ("The following operation failed in the TorchScript interpreter"),
a RuntimeError subclass, so `except ValueError` catches none of them.
"""
# requires: torch
import torch

for what, make, x in (
    ("one value per channel", lambda: torch.nn.BatchNorm1d(3), torch.ones(1, 3)),
    ("eps = 0 in training", lambda: torch.nn.BatchNorm1d(3, eps=0.0), torch.randn(4, 3)),
    ("a 1-D input", lambda: torch.nn.BatchNorm1d(3), torch.ones(3)),
):
    try:
        make()(x)
    except ValueError as exc:
        eager = exc
    else:
        raise AssertionError(f"eager {what}: nothing raised")
    scripted = torch.jit.script(make())
    try:
        scripted(x)
    except Exception as exc:  # which type it is, is the finding
        got = exc
    else:
        raise AssertionError(f"scripted {what}: nothing raised")
    print(f"{what}: eager {type(eager).__name__}, scripted {type(got).__module__}.{type(got).__name__}")
    assert type(got) is torch.jit.Error and not isinstance(got, ValueError), type(got)
    assert "The following operation failed in the TorchScript interpreter" in str(got)
