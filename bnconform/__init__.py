"""bnconform: a behaviour conformance suite for BatchNorm implementations, against PyTorch 2.13.

This module is the public API: what plugin authors and the docs import. Internal modules
(`bnconform.cases`, `bnconform.runners`) may move between releases; these names stay.

    from bnconform import Backend, Capabilities, Conventions, KernelModule, kernel_capabilities

The names load on first use (PEP 562): importing `bnconform` itself, as the pytest plugin's
entry point does in every pytest session of the environment, costs nothing.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_KERNEL_MODULE = "bnconform.runners.backends.kernel_module"
_PROTOCOL = "bnconform.runners.backends.protocol"
_WHERE = {
    "Kernel": _KERNEL_MODULE, "KernelModule": _KERNEL_MODULE, "kernel_capabilities": _KERNEL_MODULE,
    "PROFILES": _PROTOCOL, "Backend": _PROTOCOL, "BackendUnavailable": _PROTOCOL, "BatchNormModule": _PROTOCOL,
    "Capabilities": _PROTOCOL, "Conventions": _PROTOCOL, "ModuleConfig": _PROTOCOL,
}

if TYPE_CHECKING:
    from bnconform.runners.backends.kernel_module import Kernel, KernelModule, kernel_capabilities
    from bnconform.runners.backends.protocol import (
        PROFILES,
        Backend,
        BackendUnavailable,
        BatchNormModule,
        Capabilities,
        Conventions,
        ModuleConfig,
    )


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'bnconform' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_WHERE))


__all__ = [
    "PROFILES",
    "Backend",
    "BackendUnavailable",
    "BatchNormModule",
    "Capabilities",
    "Conventions",
    "Kernel",
    "KernelModule",
    "ModuleConfig",
    "__version__",
    "kernel_capabilities",
]
