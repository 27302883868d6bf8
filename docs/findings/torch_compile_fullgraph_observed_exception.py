"""Under torch.compile(fullgraph=True) BatchNorm's ValueErrors arrive as other types.

Eager nn.BatchNorm raises ValueError for an input of the wrong rank ("expected 2D or 3D
input"), for one value per channel in training and for eps <= 0 in training. With
fullgraph=True (Inductor) the rank check, raised in Python while Dynamo traces
_check_input_dim, reaches the caller as torch._dynamo.exc.Unsupported ("Observed exception");
the other two, raised by F.batch_norm on fake tensors, as TorchRuntimeError. Neither is a
ValueError.
"""
# requires: torch
import torch

for what, make, x, expected in (
    ("a 4-D input into BatchNorm1d", lambda: torch.nn.BatchNorm1d(3), torch.randn(2, 3, 2, 2), torch._dynamo.exc.Unsupported),
    ("one value per channel", lambda: torch.nn.BatchNorm1d(3), torch.ones(1, 3), torch._dynamo.exc.TorchRuntimeError),
    ("eps = 0 in training", lambda: torch.nn.BatchNorm1d(3, eps=0.0), torch.randn(4, 3), torch._dynamo.exc.TorchRuntimeError),
):
    try:
        make()(x)
    except ValueError:
        pass
    else:
        raise AssertionError(f"eager {what}: no ValueError")
    torch._dynamo.reset()
    try:
        torch.compile(make(), fullgraph=True)(x)
    except Exception as exc:  # which type it is, is the finding
        print(f"{what}: {type(exc).__module__}.{type(exc).__name__}")
        assert isinstance(exc, expected) and not isinstance(exc, ValueError), type(exc)
    else:
        raise AssertionError(f"fullgraph {what}: nothing raised")
