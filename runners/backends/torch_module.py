"""`torch-module:pkg.module:factory`: test any torch nn.Module BatchNorm through the torch interface.

`factory(num_features, *, dim, eps, momentum, affine, track_running_stats)` returns a module that
behaves like nn.BatchNorm{dim}d (a fused layer, a frozen variant, a reimplementation). A class
whose name ends in 1d/2d/3d (e.g. torch.nn:BatchNorm2d) is one dimension only: it is called
without `dim`, and cases of other dimensions are skipped with that reason.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Optional

from bnconform.runners.backends.protocol import BackendUnavailable, Capabilities, ModuleConfig
from bnconform.runners.backends.torch_backend import DTYPES, FEATURES, TorchModule

# nn.SyncBatchNorm combines shards across processes, one shard each, and only for GPU/XPU/HPU
# tensors: with a process group on CPU, torch 2.13 raises ValueError ("SyncBatchNorm expected
# input tensor to be on GPU or XPU or ..."); without one it is BatchNorm over its own batch. A
# shard case run through it in one process would pass without testing the synchronisation.
SYNC_SHARDS = ("nn.SyncBatchNorm synchronises shards across processes, on GPU/XPU/HPU tensors only; "
               "in one process it is BatchNorm over its own batch, which would not test the sharding")


def _is_sync_batchnorm(factory: Any) -> bool:
    return isinstance(factory, type) and any(c.__name__ == "SyncBatchNorm" for c in factory.__mro__)


class TorchModuleBackend:
    def __init__(self, spec: str, device: str = "cpu") -> None:
        self.name = f"torch-module:{spec}"
        self.spec = spec
        self.device = device
        self._factory: Any = None
        self._error: Optional[str] = None
        dims = frozenset({1, 2, 3})
        try:
            module_name, _, attr = spec.partition(":")
            if not attr:
                raise ValueError("expected torch-module:package.module:factory")
            self._factory = getattr(importlib.import_module(module_name), attr)
            match = re.search(r"([123])d$", getattr(self._factory, "__name__", "")) if isinstance(self._factory, type) else None
            if match:
                dims = frozenset({int(match.group(1))})
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
        # Not lazy: the factory is called with num_features, so there is no LazyBatchNorm to build.
        features, reasons = FEATURES - {"lazy"}, {"lazy": "the factory is called with num_features"}
        if _is_sync_batchnorm(self._factory):
            features, reasons["shards"] = features - {"shards"}, SYNC_SHARDS
        self.capabilities = Capabilities(dims=dims, dtypes=DTYPES, features=features, reasons=reasons)

    def available(self) -> Optional[str]:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            return f"torch is not installed ({exc})"
        return f"cannot load {self.spec}: {self._error}" if self._error else None

    def version(self) -> str:
        import torch

        module = (self.spec.partition(":")[0] or "").split(".")[0]
        try:
            from importlib.metadata import version

            return f"{module} {version(module)} (torch {torch.__version__})"
        except Exception:
            return f"torch {torch.__version__}"

    def create(self, config: ModuleConfig) -> TorchModule:
        if self._error:
            raise RuntimeError(f"cannot load {self.spec}: {self._error}")
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        return TorchModule(config, self.device, factory=self._factory)
