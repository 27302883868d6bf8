"""What `bnconform bench` times: the shape set, the phases, their minimal traffic, and per
backend x shape x phase two callables: *as called* (the module, the way its users call it,
allocation included) and *kernel* (the same arithmetic writing into preallocated outputs)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Optional

import numpy as np

from bnconform.cases.dtypes import numpy_dtype
from bnconform.cases.layouts import arrange
from bnconform.cases.schema import ModuleConfig
from bnconform.runners.backends import resolve, unavailable_reason
from bnconform.runners.backends.torch_backend import to_tensor
from bnconform.runners.bench import kernels

SHAPES: list[tuple[int, ...]] = [
    (256, 1024),
    (32, 256, 14, 14),
    (32, 64, 56, 56),
    (32, 64, 112, 112),
    (8, 32, 16, 32, 32),
    (4, 8, 4, 4),  # per-call overhead
]
PHASES = ("train_fwd", "eval_fwd", "train_fwd_bwd")
# Beyond float32 in NCHW: the layouts and precisions kernel authors ship, on one mid-size shape.
# 16-bit data goes into a float32 module (parameters and buffers float32: the mixed-precision
# training case); channels_last is float32 NHWC memory.
VARIANTS = ("float32", "channels_last", "float16", "bfloat16")
VARIANT_SHAPE: tuple[int, ...] = (32, 64, 56, 56)
# --sweep: (N, 32, 32) float32, one sample 4 KB, N log-spaced so that x grows from 4 KB to 400 MB
# in half-decades; the thread sweep runs the largest default shape with 1 .. all CPUs.
SWEEP_SHAPES: list[tuple[int, ...]] = [(round(10 ** (k / 2)), 32, 32) for k in range(11)]
THREAD_SWEEP_SHAPE: tuple[int, ...] = (32, 64, 112, 112)

# Compulsory memory traffic per phase, in tensors of x's size read and written once each:
#   train_fwd: x read, y written                                                     = 1 + 1
#   eval_fwd: x read, y written                                                      = 1 + 1
#   train_fwd_bwd: the forward (1 + 1), then the backward reads dy and x and writes dx = 3 + 2
# A two-pass kernel (statistics, then normalisation) reads x twice from memory once x outgrows
# the caches, so it cannot reach 100% there: the roofline says what memory allows, not what a
# given algorithm needs.
TRAFFIC: dict[str, tuple[int, int]] = {"train_fwd": (1, 1), "eval_fwd": (1, 1), "train_fwd_bwd": (3, 2)}
# Distinct tensors a phase touches (x, y; and dy, dx): what must fit the cache for it not to stream.
TOUCHED = {"train_fwd": 2, "eval_fwd": 2, "train_fwd_bwd": 4}
MODES = ("kernel", "as_called")
THREADS: dict[str, int] = {}


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def cell_id(shape: tuple[int, ...], variant: str) -> str:
    """The shape, then /variant unless float32 NCHW: 32x64x56x56/channels_last."""
    return shape_id(shape) + ("" if variant == "float32" else f"/{variant}")


def timing_set(wanted: list[str]) -> list[tuple[tuple[int, ...], str]]:
    """(shape, variant) of the default cells, filtered by --shape (a shape selects its variants)."""
    cells = [(s, "float32") for s in SHAPES] + [(VARIANT_SHAPE, v) for v in VARIANTS if v != "float32"]
    return [(s, v) for s, v in cells if not wanted or shape_id(s) in wanted]


def set_threads(n: int) -> None:
    """One thread count for every backend: torch's intra-op pool and the C kernel's OpenMP team."""
    THREADS["n"] = n
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


@functools.lru_cache(maxsize=1)
def _arrays(shape: tuple[int, ...], variant: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """x and dy for one cell, in its dtype and memory layout (one cell cached at a time: the
    largest pair is 200 MB)."""
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    if variant in ("float16", "bfloat16"):
        x, dy = x.astype(numpy_dtype(variant)), dy.astype(numpy_dtype(variant))
    elif variant == "channels_last":
        x, dy = arrange(x, "channels_last"), arrange(dy, "channels_last")
    return x, dy


def _backend(name: str) -> Any:
    backend = resolve(name)
    if hasattr(backend, "threads") and "n" in THREADS:
        backend.threads = THREADS["n"]
    return backend


def _torch_callable(backend: Any, config: ModuleConfig, phase: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    import torch

    module = backend.create(config).m
    xt = to_tensor(torch, x).to(backend.device)
    dyt = to_tensor(torch, dy).to(backend.device)
    sync = torch.cuda.synchronize if backend.device == "cuda" else (lambda: None)
    if phase == "eval_fwd":
        module.eval()
    if phase != "train_fwd_bwd":
        def run() -> Any:
            out = module(xt)
            sync()
            return out
        return run
    xg = xt.clone().requires_grad_(True)
    wrt = [xg] + [p for p in (module.weight, module.bias) if p is not None]

    def run_bwd() -> Any:  # grads of this call only, as the other backends return them
        grads = torch.autograd.grad(module(xg), wrt, dyt)
        sync()
        return grads

    return run_bwd


def _config(shape: tuple[int, ...]) -> ModuleConfig:
    dims: dict[int, Literal[1, 2, 3]] = {2: 1, 3: 1, 4: 2, 5: 3}
    return ModuleConfig(dim=dims[len(shape)], num_features=shape[1], dtype="float32")


def callable_for(name: str, shape: tuple[int, ...], phase: str, mode: str,
                 variant: str = "float32") -> tuple[Optional[Callable[[], Any]], Optional[str]]:
    """(callable, skip reason) for one backend x cell x phase x mode."""
    backend = _backend(name)
    reason = unavailable_reason(backend)
    if reason:
        return None, f"{name} unavailable: {reason}"
    x, dy = _arrays(shape, variant)
    config = _config(shape)
    if mode == "kernel":
        return kernels.kernel_callable(backend, config, phase, x, dy)
    if type(backend).__name__ == "TorchBackend":
        return _torch_callable(backend, config, phase, x, dy), None
    module = backend.create(config)
    if phase == "eval_fwd":
        module.eval()
        return (lambda: module.forward(x)), None
    if phase == "train_fwd":
        return (lambda: module.forward(x)), None

    def fwd_bwd() -> Any:
        module.forward(x)
        return module.backward(dy)

    return fwd_bwd, None


def traffic_bytes(shape: tuple[int, ...], phase: str, variant: str = "float32") -> tuple[int, int]:
    """(bytes read, bytes written) at the least, in the cell's dtype."""
    size = (2 if variant in ("float16", "bfloat16") else 4) * int(np.prod(shape))
    reads, writes = TRAFFIC[phase]
    return reads * size, writes * size
