"""torch's CPU BatchNorm backward is wrong for a channels_last input whose size-1 dimensions have
stride 1 when grad_output is contiguous (eager, torch 2.13.0+cpu).

A (1, 3, 4, 5) input with strides (1, 1, 15, 3) is channels_last (`is_contiguous(memory_format=
torch.channels_last)` is True: the stride of a size-1 dimension does not matter), and its forward
is right. With a contiguous grad_output, grad_input and grad_weight are wrong; with the canonical
channels_last strides (60, 1, 15, 3), or with grad_output in the input's layout, they are right.
This is what the compiler columns' order-dependent channels_last gradients come from: compiled
code can hand the backward a grad_output in another layout than eager's.
"""
# requires: torch
import torch

torch.manual_seed(0)


def grads(x, g):
    bn = torch.nn.BatchNorm2d(x.shape[1])
    x = x.detach().requires_grad_()
    bn(x).backward(g)
    return x.grad, bn.weight.grad


shape = (1, 3, 4, 5)
values, g = torch.randn(shape), torch.randn(shape)
ref = grads(values.contiguous(), g)
canonical = values.contiguous(memory_format=torch.channels_last)  # strides (60, 1, 15, 3)
odd = torch.empty_strided(shape, (1, 1, 15, 3))  # the size-1 batch dimension with stride 1
odd.copy_(values)
assert odd.is_contiguous(memory_format=torch.channels_last) and torch.equal(odd, values)
close = [torch.allclose(a, b, atol=1e-5) for a, b in zip(grads(canonical, g), ref)]
print("canonical channels_last strides", canonical.stride(), "grads right:", close)
assert all(close)
close = [torch.allclose(a, b, atol=1e-5) for a, b in zip(grads(odd, g.contiguous(memory_format=torch.channels_last)),
                                                           ref)]
print("strides", odd.stride(), "grad_output channels_last: grads right:", close)
assert all(close)
wrong = grads(odd, g)
close = [torch.allclose(a, b, atol=1e-5) for a, b in zip(wrong, ref)]
print("strides", odd.stride(), "grad_output contiguous: grads right:", close,
      "max error", float((wrong[0] - ref[0]).abs().max()))
assert not any(close), "the gradients are right now"
