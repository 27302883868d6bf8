"""The *kernel* comparison: each backend's BatchNorm arithmetic writing into outputs allocated
once, so that a ratio compares kernels and not allocators.

torch's module allocates a new output per call; above glibc's mmap threshold every call
page-faults it in, which can cost more than the kernel. Here torch runs the kernels its module
dispatches to on CPU (aten::native_batch_norm and native_batch_norm_backward) through their
`.out` variants (the backward's still computes into temporaries and copies them out, so its
train_fwd_bwd cells keep those allocations: the report says so). A KernelModule backend
(numpy, cffi, ...) runs its kernel's functions directly; their outputs come from the kernel's
OutputRecycler, which hands back the same arrays once the previous call's are dropped (these
callables drop them), so no output is allocated after the warm-up call (a kernel's own
working arrays are part of its cost). A backend with neither has no kernel entry point: its cells
are skipped in this comparison with that reason and timed as called only.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from bnconform.cases.dtypes import dtype_name
from bnconform.cases.layouts import is_channels_last
from bnconform.cases.schema import ModuleConfig
from bnconform.runners.backends.torch_backend import to_tensor

EPS, MOMENTUM = 1e-5, 0.1


def kernel_callable(backend: Any, config: ModuleConfig, phase: str, x: np.ndarray,
                    dy: np.ndarray) -> tuple[Optional[Callable[[], Any]], Optional[str]]:
    """(callable, skip reason) of `phase` on preallocated outputs."""
    if type(backend).__name__ == "TorchBackend":
        return _torch(backend.device, phase, x, dy), None
    kernel = getattr(backend.create(config), "kernel", None)  # a KernelModule's functional kernel
    if kernel is None or not hasattr(kernel, "forward_train"):
        return None, f"{backend.name} has no kernel entry point (not a KernelModule backend): timed as called only"
    if dtype_name(x.dtype) not in getattr(kernel, "native_dtypes", ("float32", "float64")):
        return None, f"{backend.name}'s kernel has no {dtype_name(x.dtype)} (KernelModule computes it in float32)"
    if is_channels_last(x) and not getattr(kernel, "channels_last", False):
        return None, f"{backend.name}'s kernel has no channels_last path (KernelModule copies to NCHW)"
    return _kernel_module(kernel, phase, x, dy), None


def _torch(device: str, phase: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    import torch

    aten = torch.ops.aten
    c = x.shape[1]
    xt, dyt = to_tensor(torch, x).to(device), to_tensor(torch, dy).to(device)  # dtype and strides kept
    w, b = torch.ones(c, device=device), torch.zeros(c, device=device)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    y = torch.empty_like(xt)
    training = phase != "eval_fwd"
    # eval saves no statistics: torch resizes these to 0 elements, so start them there
    sm, si = (torch.empty(c if training else 0, device=device) for _ in range(2))
    dx, dw, db = torch.empty_like(xt), torch.empty(c, device=device), torch.empty(c, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward() -> None:
        aten.native_batch_norm.out(xt, w, b, rm, rv, training, MOMENTUM, EPS, out=y, save_mean=sm, save_invstd=si)
        sync()

    def forward_backward() -> None:  # training: forward() saved the statistics the backward reads
        forward()
        aten.native_batch_norm_backward.out(dyt, xt, w, rm, rv, sm, si, True, EPS, [True, True, True],
                                            out0=dx, out1=dw, out2=db)
        sync()

    return forward_backward if phase == "train_fwd_bwd" else forward


def _kernel_module(kernel: Any, phase: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    c = x.shape[1]
    pt = np.float32 if x.dtype.itemsize == 2 else x.dtype  # 16-bit data, float32 parameters and buffers
    w, b = np.ones(c, pt), np.zeros(c, pt)
    rm, rv = np.zeros(c, pt), np.ones(c, pt)

    def train_fwd() -> None:
        kernel.forward_train(x, w, b, rm, rv, MOMENTUM, EPS)

    def eval_fwd() -> None:
        kernel.forward_eval(x, w, b, rm, rv, EPS)

    def train_fwd_bwd() -> None:
        y, mean, invstd = kernel.forward_train(x, w, b, rm, rv, MOMENTUM, EPS)
        del y  # back to the recycler before the backward asks for its buffers
        kernel.backward_train(dy, x, w, mean, invstd)

    return {"train_fwd": train_fwd, "eval_fwd": eval_fwd, "train_fwd_bwd": train_fwd_bwd}[phase]
