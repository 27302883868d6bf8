"""torch.compile refuses double backward through BatchNorm, which eager supports.

Eager: the input gradient of nn.BatchNorm2d taken with create_graph=True can be differentiated
again (what gradient penalties do). Compiled (aot_eager here: AOTAutograd's behaviour, no code
generation; Inductor does the same), differentiating that gradient again raises RuntimeError
("torch.compile with aot_autograd does not currently support double backward"), in training and
in eval. Where the compiled backward donated its saved buffers, the refusal reads instead that it
"was compiled with non-empty donated buffers which requires create_graph=False and
retain_graph=False" (what bnconform's double_backward steps see).
"""
# requires: torch
import torch

torch.manual_seed(0)
probe = torch.randn(4, 3, 2, 2)  # weights the input gradient (its plain sum is 0 in training)


def double_backward(module):
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    (dx,) = torch.autograd.grad(module(x).pow(2).sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad((dx * probe).sum(), x)
    return ddx


print("eager: second-order gradient norm", float(double_backward(torch.nn.BatchNorm2d(3)).norm()))
try:
    double_backward(torch.compile(torch.nn.BatchNorm2d(3), backend="aot_eager"))
except RuntimeError as exc:
    print("compiled:", str(exc).splitlines()[0][:160])
    assert "does not currently support double backward" in str(exc) or "create_graph=False" in str(exc)
else:
    raise AssertionError("compiled: double backward worked")
torch._dynamo.reset()
evaluating = torch.nn.BatchNorm2d(3).eval()
print("eager, eval: second-order gradient norm", float(double_backward(evaluating).norm()))
try:
    double_backward(torch.compile(evaluating, backend="aot_eager"))
except RuntimeError as exc:
    print("compiled, eval:", str(exc).splitlines()[0][:160])
    assert "does not currently support double backward" in str(exc) or "create_graph=False" in str(exc)
else:
    raise AssertionError("compiled, eval: double backward worked")
