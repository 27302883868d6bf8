"""torch.compile turns BatchNorm's one-value ValueError into TorchRuntimeError.

Eager nn.BatchNorm raises ValueError("Expected more than 1 value per channel when training").
Compiled (aot_eager here: no code generation involved; Inductor does the same), Dynamo runs
F.batch_norm on fake tensors while tracing, and what it raises there reaches the caller as
torch._dynamo.exc.TorchRuntimeError, a RuntimeError, not a ValueError; so does eps <= 0
("batch_norm eps must be positive during training").
"""
# requires: torch
import torch

x = torch.ones(1, 3)
try:
    torch.nn.BatchNorm1d(3)(x)
except ValueError as exc:
    print("eager:", type(exc).__name__, exc)
else:
    raise AssertionError("eager: nothing raised")
compiled = torch.compile(torch.nn.BatchNorm1d(3), backend="aot_eager")
try:
    compiled(x)
except Exception as exc:  # which type it is, is the finding
    got = exc
else:
    raise AssertionError("compiled: nothing raised")
print("compiled:", type(got).__module__, type(got).__name__)
assert isinstance(got, torch._dynamo.exc.TorchRuntimeError) and not isinstance(got, ValueError), type(got)
assert "Expected more than 1 value per channel" in str(got)

# The same for every ValueError F.batch_norm raises while Dynamo traces it, eps <= 0 among them.
try:
    torch.compile(torch.nn.BatchNorm1d(3, eps=0.0), backend="aot_eager")(torch.randn(4, 3))
except Exception as exc:
    got = exc
else:
    raise AssertionError("compiled, eps=0: nothing raised")
print("compiled, eps=0:", type(got).__name__)
assert isinstance(got, torch._dynamo.exc.TorchRuntimeError) and not isinstance(got, ValueError), type(got)
assert "batch_norm eps must be positive during training" in str(got)
