"""torch modules that break the contract through the torch adapter (`--backend torch-module:tests.torch_factories:NAME`).

Each is torch's own BatchNorm, right in every value, that writes into a tensor the adapter hands
it: the input in forward (three ways past autograd's leaf check, and the plain in-place one,
which autograd refuses on an input that requires grad), forward's input kept and written in
backward, or grad_output in a backward hook. The adapter must fail those cells saying what was
written (tests/test_torch_contract.py).
"""
from __future__ import annotations

from typing import Any

import torch

_BASE = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}


def _module(num_features: int, dim: int, forward: Any, **kwargs: Any) -> torch.nn.Module:
    """nn.BatchNorm{dim}d whose forward is `forward(module, x, y)` after the real one."""

    class Module(_BASE[dim]):  # type: ignore[valid-type, misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = super().forward(x)
            forward(self, x)
            return y

    return Module(num_features, **kwargs)


def _last_channel(x: torch.Tensor) -> torch.Tensor:
    """The last channel (of a (2, 2) input: elements (0, 1) and (1, 1))."""
    return x[:, -1]


def writes_input_data(num_features: int, *, dim: int, **kwargs: Any) -> torch.nn.Module:
    """`x.data[:, -1] += 1`: .data has no autograd history, so nothing stops the write."""
    def forward(module: torch.nn.Module, x: torch.Tensor) -> None:
        _last_channel(x.data).add_(1)
    return _module(num_features, dim, forward, **kwargs)


def writes_input_no_grad(num_features: int, *, dim: int, **kwargs: Any) -> torch.nn.Module:
    """`with torch.no_grad(): x.add_(1)`: in-place on a leaf that requires grad, allowed under no_grad."""
    def forward(module: torch.nn.Module, x: torch.Tensor) -> None:
        with torch.no_grad():
            x.add_(1)
    return _module(num_features, dim, forward, **kwargs)


def writes_input_inplace(num_features: int, *, dim: int, **kwargs: Any) -> torch.nn.Module:
    """`x.add_(1)` as it is: autograd raises for a leaf that requires grad (already a failure),
    but under no_grad / inference_mode the input does not require grad and the write goes through."""
    def forward(module: torch.nn.Module, x: torch.Tensor) -> None:
        x.add_(1)
    return _module(num_features, dim, forward, **kwargs)


def writes_input_in_backward(num_features: int, *, dim: int, **kwargs: Any) -> torch.nn.Module:
    """Keeps forward's input and zeroes it in a backward hook (after its gradients are computed)."""
    def forward(module: torch.nn.Module, x: torch.Tensor) -> None:
        module.kept = x  # type: ignore[assignment]

    module = _module(num_features, dim, forward, **kwargs)

    def hook(mod: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
        mod.kept.data.zero_()  # type: ignore[union-attr, operator]

    module.register_full_backward_hook(hook)
    return module


def writes_grad_output(num_features: int, *, dim: int, **kwargs: Any) -> torch.nn.Module:
    """Doubles grad_output in place in a full backward hook (after grad_input is computed)."""
    module = _BASE[dim](num_features, **kwargs)

    def hook(mod: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
        grad_output[0].mul_(2)

    module.register_full_backward_hook(hook)
    return module
