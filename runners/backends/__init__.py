"""Backend registry: built-in names, and `package.module:attr` for anything else."""
from __future__ import annotations

import importlib
from typing import Callable, Optional

from cases.requirements import FEATURES
from runners.protocol import Backend, Capabilities, ModuleConfig


def _torch_cpu() -> Backend:
    from runners.backends.torch_backend import TorchBackend

    return TorchBackend("cpu")


def _torch_cuda() -> Backend:
    from runners.backends.torch_backend import TorchBackend

    return TorchBackend("cuda")


def _numpy() -> Backend:
    from runners.backends.numpy_backend import NumpyBackend

    return NumpyBackend()


def _cffi() -> Backend:
    from runners.backends.cffi_backend import CffiBackend

    return CffiBackend()


BUILTIN: dict[str, Callable[[], Backend]] = {
    "torch": _torch_cpu,
    "torch-cuda": _torch_cuda,
    "numpy": _numpy,
    "cffi": _cffi,
}


class UnknownBackend(Exception):
    """A --backend value that names nothing (a usage error)."""


class BrokenBackend:
    """Stands in for a backend that failed to load: each of its cells errors with the cause."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error
        # Declares everything, so that every cell reaches create() and errors, none is skipped.
        self.capabilities = Capabilities(features=frozenset(FEATURES))

    def version(self) -> str:
        return "unknown (failed to load)"

    def create(self, config: ModuleConfig) -> Backend:
        raise RuntimeError(f"backend {self.name!r} failed to load: {self.error}")


def resolve(name: str) -> Backend:
    """A backend by built-in name or `package.module:attr` (an object or a factory)."""
    if name in BUILTIN:
        try:
            return BUILTIN[name]()
        except Exception as exc:  # a broken built-in fails its own cells
            return BrokenBackend(name, f"{type(exc).__name__}: {exc}")
    if ":" not in name:
        raise UnknownBackend(f"unknown backend {name!r}; built-in: {', '.join(BUILTIN)}; or give package.module:attr")
    module_name, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
        backend = obj() if callable(obj) and not hasattr(obj, "create") else obj
    except Exception as exc:
        return BrokenBackend(name, f"{type(exc).__name__}: {exc}")
    if not hasattr(backend, "create") or not hasattr(backend, "capabilities"):
        return BrokenBackend(name, f"{name} is not a backend (needs name, capabilities, version(), create())")
    backend.name = getattr(backend, "name", None) or name
    return backend


def unavailable_reason(backend: Backend) -> Optional[str]:
    """Why a backend cannot run here (None if it can): optional `available()` on the backend."""
    check = getattr(backend, "available", None)
    return check() if callable(check) else None


def default_backends() -> list[str]:
    """Built-ins that can run here: torch-cuda only where CUDA is present."""
    names = []
    for name in BUILTIN:
        if name == "torch-cuda" and unavailable_reason(resolve(name)):
            continue
        names.append(name)
    return names
