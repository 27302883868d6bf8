"""Backend registry: built-in names, and `package.module:attr` for anything else."""
from __future__ import annotations

import importlib
import importlib.metadata
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


def _framework(module: str, cls: str) -> Callable[[], Backend]:
    def make() -> Backend:
        return getattr(importlib.import_module(f"runners.backends.frameworks.{module}"), cls)()

    return make


# Adapters of other frameworks: run when named, skipped with the reason when their package is missing.
FRAMEWORKS: dict[str, Callable[[], Backend]] = {
    "onnxruntime": _framework("onnxruntime_backend", "OnnxRuntimeBackend"),
    "keras": _framework("keras_backend", "KerasBackend"),
    "flax": _framework("flax_backend", "FlaxBackend"),
    "tinygrad": _framework("tinygrad_backend", "TinygradBackend"),
}

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


ENTRY_POINT_GROUP = "bnconform.backends"


def plugins() -> dict[str, str]:
    """Backends registered by installed packages: entry point name -> `package.module:attr`."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve(name: str) -> Backend:
    """A backend by built-in name, `torch-module:pkg.module:factory`, `pkg.module:attr` (an
    object or a factory), or the name a package registered under the `bnconform.backends`
    entry point group."""
    if name in BUILTIN or name in FRAMEWORKS:
        try:
            return {**BUILTIN, **FRAMEWORKS}[name]()
        except Exception as exc:  # a broken built-in fails its own cells
            return BrokenBackend(name, f"{type(exc).__name__}: {exc}")
    if name.startswith("torch-module:"):
        from runners.backends.torch_module import TorchModuleBackend

        return TorchModuleBackend(name.removeprefix("torch-module:"))
    if ":" not in name:
        registered = plugins()
        if name not in registered:
            raise UnknownBackend(
                f"unknown backend {name!r}; built-in: {', '.join(BUILTIN)}; plugins: {', '.join(registered) or 'none'}; "
                "or give package.module:attr or torch-module:package.module:factory")
        backend = _load(registered[name], name)
        backend.name = name
        return backend
    return _load(name, name)


def _load(target: str, name: str) -> Backend:
    module_name, _, attr = target.partition(":")
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
