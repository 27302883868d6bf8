"""bnconform: a behaviour conformance suite for BatchNorm implementations, against PyTorch 2.13.

This module is the public API: what plugin authors and the docs import. Internal modules
(`bnconform.cases`, `bnconform.runners`) may move between releases; these names stay.

    from bnconform import Backend, Capabilities, Conventions, KernelModule, kernel_capabilities
"""
from __future__ import annotations

__version__ = "0.2.0"

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
