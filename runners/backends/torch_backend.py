"""The reference implementation itself: torch.nn.BatchNorm{1,2,3}d, on CPU or CUDA."""
from __future__ import annotations

from typing import Any, Optional, cast

import numpy as np

from bnconform.runners.backends.protocol import Array, BackendUnavailable, Capabilities, ModuleConfig

FEATURES = frozenset(
    {
        "backward",
        "toggle_track_running_stats",
        "set_momentum",
        "momentum_none",
        "momentum_decay",
        "state_dict",
        "reset",
        "requires_grad",
        "init",
        "errors",
        "untracked",
    }
)


class TorchModule:
    """The protocol over any torch module that behaves like nn.BatchNorm{dim}d."""

    def __init__(self, config: ModuleConfig, device: str, factory: Optional[Any] = None) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.dtype = getattr(torch, config.dtype)
        self.decay = config.momentum_convention == "decay"
        kwargs: dict[str, Any] = dict(
            eps=config.eps,
            momentum=self._torch_momentum(config.momentum),
            affine=config.affine,
            track_running_stats=config.track_running_stats,
        )
        if factory is None:
            cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[config.dim]
            module = cls(config.num_features, **kwargs)
        elif isinstance(factory, type):  # a BatchNorm class of one dimension
            module = factory(config.num_features, **kwargs)
        else:
            module = factory(config.num_features, dim=config.dim, **kwargs)
        self.m = module.to(device=device, dtype=self.dtype)
        self._x: Any = None
        self._y: Any = None

    def _tensor(self, a: Array) -> Any:
        return self.torch.as_tensor(np.ascontiguousarray(a)).to(device=self.device, dtype=self.dtype)

    @staticmethod
    def _numpy(t: Any) -> Optional[Array]:
        return None if t is None else t.detach().cpu().numpy().copy()

    def train(self) -> None:
        self.m.train()

    def eval(self) -> None:
        self.m.eval()

    def _torch_momentum(self, m: Optional[float]) -> Optional[float]:
        """A decay-convention momentum (weight of the old value) as torch's 1 - m."""
        if m is None or not self.decay:
            return m
        return 1.0 - m

    def set_attribute(self, name: str, value: object) -> None:
        if name == "momentum":
            value = self._torch_momentum(cast(Optional[float], value))  # a SetStep momentum
        setattr(self.m, name, value)

    def forward(self, x: Array) -> Array:
        self._x = self._tensor(x).requires_grad_(True)
        self._y = self.m(self._x)
        return cast(Array, self._numpy(self._y))  # the module's output tensor

    def backward(self, grad_output: Array) -> dict[str, Optional[Array]]:
        for p in (self.m.weight, self.m.bias):
            if p is not None:
                p.grad = None
        self._y.backward(self._tensor(grad_output))
        grads = {
            "input": self._numpy(self._x.grad),
            "weight": self._numpy(None if self.m.weight is None else self.m.weight.grad),
            "bias": self._numpy(None if self.m.bias is None else self.m.bias.grad),
        }
        self._y = None
        return grads

    def get(self, name: str) -> Optional[Array | int]:
        t = getattr(self.m, name)
        if t is None:
            return None
        if name == "num_batches_tracked":
            return int(t.item())
        return self._numpy(t)

    def assign(self, name: str, value: Array | int) -> None:
        with self.torch.no_grad():
            getattr(self.m, name).copy_(self.torch.as_tensor(value))

    def state_dict(self) -> dict[str, Array]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.m.state_dict().items()}

    def load_state_dict(self, state: dict[str, Array], strict: bool = True) -> None:
        from collections import OrderedDict

        sd = OrderedDict((k, self.torch.as_tensor(np.asarray(v))) for k, v in state.items())
        # Protocol dicts are current-version ones: without this metadata torch would take the
        # dict for a pre-num_batches_tracked one and fill the missing counter in.
        sd._metadata = OrderedDict({"": {"version": type(self.m)._version}})  # type: ignore[attr-defined]
        self.m.load_state_dict(sd, strict=strict)

    def reset_running_stats(self) -> None:
        self.m.reset_running_stats()

    def reset_parameters(self) -> None:
        self.m.reset_parameters()

    def set_requires_grad(self, name: str, flag: bool) -> None:
        getattr(self.m, name).requires_grad_(flag)


class TorchBackend:
    """torch.nn.BatchNorm on `device` ("cpu" or "cuda")."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.name = "torch" if device == "cpu" else f"torch-{device}"
        self.capabilities = Capabilities(features=FEATURES)

    def version(self) -> str:
        import torch

        return torch.__version__

    def available(self) -> Optional[str]:
        """None when usable here, else the reason it is not."""
        try:
            import torch
        except ImportError as exc:
            return f"torch is not installed ({exc})"
        if self.device == "cuda" and not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        return None

    def create(self, config: ModuleConfig) -> TorchModule:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        return TorchModule(config, self.device)
