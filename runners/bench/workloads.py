"""What `bnconform bench` times: the shape set, the phases, their byte counts, and one
callable per backend x shape x phase, built the way each backend's users call it."""
from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Optional

import numpy as np

from bnconform.cases.schema import ModuleConfig
from bnconform.runners.backends import resolve, unavailable_reason

SHAPES: list[tuple[int, ...]] = [
    (256, 1024),
    (32, 256, 14, 14),
    (32, 64, 56, 56),
    (32, 64, 112, 112),
    (8, 32, 16, 32, 32),
    (4, 8, 4, 4),  # per-call overhead
]
PHASES = ("train_fwd", "eval_fwd", "train_fwd_bwd")

# Minimal memory traffic per phase, in tensor sizes (x, y, dy, dx each one tensor):
#   train_fwd: x read twice (statistics, then normalisation) + y written            = 3
#   eval_fwd: x read once + y written                                                = 2
#   train_fwd_bwd: the forward (3) + backward reading dy and x twice (sums, then dx)
#                  + dx written (5)                                                  = 8
TENSORS_MOVED = {"train_fwd": 3, "eval_fwd": 2, "train_fwd_bwd": 8}
THREADS: dict[str, int] = {}


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def set_threads(n: int) -> None:
    """One thread count for every backend: torch's intra-op pool and the C kernel's OpenMP team."""
    THREADS["n"] = n
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


@functools.lru_cache(maxsize=1)
def _arrays(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """x and dy for one shape (one shape cached at a time: the largest pair is 200 MB)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    return x, dy


def _backend(name: str) -> Any:
    backend = resolve(name)
    if hasattr(backend, "threads") and "n" in THREADS:
        backend.threads = THREADS["n"]
    return backend


def _torch_callable(backend: Any, config: ModuleConfig, phase: str, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    import torch

    module = backend.create(config).m
    xt = torch.from_numpy(x).to(backend.device)
    dyt = torch.from_numpy(dy).to(backend.device)
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


def phase_callable(name: str, shape: tuple[int, ...], phase: str) -> tuple[Optional[Callable[[], Any]], int, Optional[str]]:
    """(callable, minimal bytes moved, skip reason) for one cell."""
    backend = _backend(name)
    reason = unavailable_reason(backend)
    if reason:
        return None, 0, f"{name} unavailable: {reason}"
    dims: dict[int, Literal[1, 2, 3]] = {2: 1, 3: 1, 4: 2, 5: 3}
    config = ModuleConfig(dim=dims[len(shape)], num_features=shape[1], dtype="float32")
    x, dy = _arrays(shape)
    nbytes = TENSORS_MOVED[phase] * x.nbytes
    if type(backend).__name__ == "TorchBackend":
        return _torch_callable(backend, config, phase, x, dy), nbytes, None
    module = backend.create(config)
    if phase == "eval_fwd":
        module.eval()
        return (lambda: module.forward(x)), nbytes, None
    if phase == "train_fwd":
        return (lambda: module.forward(x)), nbytes, None

    def fwd_bwd() -> Any:
        module.forward(x)
        return module.backward(dy)

    return fwd_bwd, nbytes, None


def copy_callable(shape: tuple[int, ...]) -> tuple[Callable[[], Any], int]:
    """A plain copy of one float32 tensor with the same threads (torch's copy_ when available)."""
    x, _ = _arrays(shape)
    try:
        import torch

        src = torch.from_numpy(x)
        dst = torch.empty_like(src)
        dst.copy_(src)
        return (lambda: dst.copy_(src)), 2 * x.nbytes
    except ImportError:  # pragma: no cover
        dst_np = np.empty_like(x)
        return (lambda: np.copyto(dst_np, x)), 2 * x.nbytes
