"""torch.compile gives BatchNorm3d a wrong gradient for a channels_last_3d input when a
BatchNorm2d of the process compiled a channels_last input before.

The input and grad_output are channels_last with stride 1 on their size-1 dimensions, a valid
channels_last layout (`is_contiguous(memory_format=...)` is True; the stride of a size-1
dimension does not matter), as NumPy's transposed arrays arrive through torch.from_numpy.
Alone, a compiled BatchNorm3d's training backward for a (1, 2, 1, 1, 3) input equals eager's.
After a compiled BatchNorm2d's forward and backward on a (1, 2, 1, 3) input of the same kind,
the same BatchNorm3d step returns grad_input, grad_weight and grad_bias off by up to ~1
(aot_eager here: no code generation; Inductor does the same). Nothing about the second module
differs, only what the process compiled before; the values are what torch's eager CPU backward
gives for such an input with a contiguous grad_output
(docs/findings/torch_channels_last_size1_strides_backward.py).
"""
# requires: torch
import torch


def tensor(values, shape, strides):
    t = torch.empty_strided(shape, strides)
    t.copy_(torch.tensor(values).reshape(shape))
    return t


def step(dim, compile):
    shape, strides = ((1, 2, 1, 3), (1, 1, 2, 2)) if dim == 2 else ((1, 2, 1, 1, 3), (1, 1, 2, 2, 2))
    bn = (torch.nn.BatchNorm2d if dim == 2 else torch.nn.BatchNorm3d)(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    x = tensor([0.0, 1, 2, 0, 2, 4], shape, strides).requires_grad_()
    grad = tensor([1.0, 0, 0, 1, 1, 1], shape, strides)
    assert x.is_contiguous(memory_format=torch.channels_last if dim == 2 else torch.channels_last_3d)
    run = torch.compile(bn, backend="aot_eager") if compile else bn
    run(x).backward(grad)
    return x.grad.flatten(), bn.weight.grad, bn.bias.grad


eager = step(3, compile=False)
alone = step(3, compile=True)
print("eager grad_input   ", [round(v, 4) for v in eager[0].tolist()])
print("compiled alone     ", [round(v, 4) for v in alone[0].tolist()])
assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, eager))
torch._dynamo.reset()
step(2, compile=True)  # another compiled module, before it
after = step(3, compile=True)
print("compiled after a BatchNorm2d step", [round(v, 4) for v in after[0].tolist()])
print("grad_weight eager", eager[1].tolist(), "after", after[1].tolist())
assert not torch.allclose(after[0], eager[0], atol=1e-3), "the gradient is right now"
