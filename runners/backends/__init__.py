"""Backend names: what `--backend` accepts, and how a named backend is loaded.

Naming and loading are separate on purpose. `columns()` runs in the test process and only
reads names (built-ins, entry points, `ALIAS=`); `load()` imports and builds the backend and
runs inside the backend's own worker process (runners/engine/isolation.py), so a backend
that crashes on import costs its own cells, never the run.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from bnconform.runners.backends.protocol import Backend

ENTRY_POINT_GROUP = "bnconform.backends"
MUTANT_PREFIX = "mutant:"  # the shipped corpus of deliberately broken backends (mutants.py)
MUTANTS_MODULE = "bnconform.runners.backends.mutants"
# The torch release whose behaviour the specs, goldens and docs/semantics.md encode. Another
# release still runs as the torch column; the run then warns that differences may be torch's own.
TORCH_RELEASE = "2.13.0"
TORCH_MISSING = "torch is not installed (pip install 'bnconform[torch]' adds the torch columns)"


def torch_installed() -> bool:
    """Whether torch can be imported here, found without importing it (seconds)."""
    return importlib.util.find_spec("torch") is not None


def uses_torch(target: str) -> bool:
    """Whether a column's backend is built on torch (its worker needs torch imported)."""
    return (target in ("torch", "torch-cuda") or target in COMPILERS
            or target.startswith(("torch-module:", MUTANT_PREFIX, MUTANTS_MODULE + ":")))


def torch_release_warning(column: str, version: str) -> Optional[str]:
    """A warning when a torch column ran another torch release than the one the library encodes."""
    found = re.search(r"(?:^|torch )(\d+\.\d+(?:\.\d+)?)", version)
    if found is None or found.group(1) == TORCH_RELEASE:
        return None
    return (f"backend {column} ran torch {found.group(1)}; bnconform encodes torch {TORCH_RELEASE}'s behaviour, so a "
            f"difference may be a change in torch itself (docs/semantics.md)")


def _torch_cpu() -> Backend:
    from bnconform.runners.backends.torch_backend import TorchBackend

    return TorchBackend("cpu")


def _torch_cuda() -> Backend:
    from bnconform.runners.backends.torch_backend import TorchBackend

    return TorchBackend("cuda")


def _numpy() -> Backend:
    from bnconform.runners.backends.numpy_backend import NumpyBackend

    return NumpyBackend()


def _cffi() -> Backend:
    from bnconform.runners.backends.cffi_backend import CffiBackend

    return CffiBackend()


def _framework(module: str, cls: str) -> Callable[[], Backend]:
    def make() -> Backend:
        return getattr(importlib.import_module(f"bnconform.runners.backends.frameworks.{module}"), cls)()

    return make


BUILTIN: dict[str, Callable[[], Backend]] = {
    "torch": _torch_cpu,
    "torch-cuda": _torch_cuda,
    "numpy": _numpy,
    "cffi": _cffi,
}

# Adapters of other frameworks: run when named, skipped with the reason when their package is missing.
FRAMEWORKS: dict[str, Callable[[], Backend]] = {
    "onnxruntime": _framework("onnxruntime_backend", "OnnxRuntimeBackend"),
    "keras": _framework("keras_backend", "KerasBackend"),
    "keras-tf": _framework("keras_backend", "KerasTfBackend"),
    "tensorflow": _framework("tensorflow_backend", "TensorFlowBackend"),
    "flax": _framework("flax_backend", "FlaxBackend"),
    "tinygrad": _framework("tinygrad_backend", "TinygradBackend"),
    "paddle": _framework("paddle_backend", "PaddleBackend"),
    "equinox": _framework("equinox_backend", "EquinoxBackend"),
    "haiku": _framework("haiku_backend", "HaikuBackend"),
    "mlx": _framework("mlx_backend", "MlxBackend"),
}


def _compiled(mode: str) -> Callable[[], Backend]:
    def make() -> Backend:
        from bnconform.runners.backends.torch_compilers import compiled_backend

        return compiled_backend(mode)

    return make


# nn.BatchNorm through torch's compilers (runners/backends/torch_compilers.py): run when named.
COMPILERS: dict[str, Callable[[], Backend]] = {
    name: _compiled(name)
    for name in ("torch-compile", "torch-compile-fullgraph", "torch-compile-aot", "torch-export", "torchscript")
}


class UnknownBackend(Exception):
    """A --backend value that names nothing (a usage error)."""


class BackendLoadError(Exception):
    """A named backend could not be imported or built: it is unavailable here, with this reason."""


class NotABackend(BackendLoadError):
    """What the name points at loads, but is no backend: a breach of the protocol, not unavailability."""


@dataclass(frozen=True)
class Column:
    """One backend column of the matrix: its name there, and what to load for it.

    `problem` is set when the column cannot run at all (its name is already taken); its cells
    then error with that reason instead of running.
    """

    name: str
    target: str
    problem: Optional[str] = None


def plugins() -> dict[str, str]:
    """Backends registered by installed packages: entry point name -> `package.module:attr`."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def split_alias(name: str) -> tuple[str, str]:
    """`ALIAS=SPEC` runs SPEC under the column name ALIAS (a new build standing in for an old one)."""
    alias, sep, spec = name.partition("=")
    return (alias, spec) if sep and alias and ":" not in alias else (name, name)


def check_column_name(name: str) -> None:
    """A column name is part of every cell's test id, CASE[COLUMN]: no brackets, no whitespace."""
    if not name or any(c in name for c in "[]") or any(c.isspace() for c in name):
        raise UnknownBackend(f"column name {name!r}: may not be empty or contain brackets or whitespace "
                             "(give another with ALIAS=...)")


def check_name(target: str) -> None:
    """Raise UnknownBackend for a name that cannot mean anything, without importing it."""
    if target in BUILTIN or target in FRAMEWORKS or target in COMPILERS or target.startswith("torch-module:"):
        return
    if target.startswith(MUTANT_PREFIX):
        from bnconform.runners.backends.mutants import MUTANTS

        if target.removeprefix(MUTANT_PREFIX) not in MUTANTS:
            raise UnknownBackend(f"unknown mutant {target!r}; the corpus has: {', '.join(MUTANTS)}")
        return
    if ":" in target:
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise UnknownBackend(f"backend {target!r}: expected package.module:attr")
        return
    registered = plugins()
    if target not in registered:
        raise UnknownBackend(
            f"unknown backend {target!r}; built-in: {', '.join(BUILTIN)}; frameworks: {', '.join(FRAMEWORKS)}; "
            f"torch compilers: {', '.join(COMPILERS)}; "
            f"plugins: {', '.join(registered) or 'none'}; or give package.module:attr, "
            "torch-module:package.module:factory or mutant:NAME")


def columns(names: list[str]) -> list[Column]:
    """The matrix columns for --backend values, in order; a repeated value counts once.

    Two values that claim one column name (`numpy` and `numpy=mypkg:bn`) cannot both be
    reported under it: the first keeps the name, each later one becomes NAME#2, NAME#3 ... and
    errors its cells, saying which value already holds the name.
    """
    out: list[Column] = []
    owner: dict[str, str] = {}
    for value in dict.fromkeys(names):
        name, target = split_alias(value)
        check_column_name(name)
        check_name(target)
        if name in owner:
            count = sum(1 for c in out if c.name.split("#")[0] == name) + 1
            out.append(Column(f"{name}#{count}", target,
                              f"column name {name!r} is already taken by --backend {owner[name]}; "
                              f"give this one another name: --backend OTHER={target}"))
            continue
        owner[name] = value
        out.append(Column(name, target))
    return out


def load(target: str) -> Backend:
    """Import and build the backend a (checked) name stands for. Raises BackendLoadError."""
    try:
        if target in BUILTIN or target in FRAMEWORKS or target in COMPILERS:
            return {**BUILTIN, **FRAMEWORKS, **COMPILERS}[target]()
        if target.startswith("torch-module:"):
            from bnconform.runners.backends.torch_module import TorchModuleBackend

            return TorchModuleBackend(target.removeprefix("torch-module:"))
        if target.startswith(MUTANT_PREFIX):
            target = f"{MUTANTS_MODULE}:{target.removeprefix(MUTANT_PREFIX)}"
        elif ":" not in target:
            target = plugins()[target]
        module_name, _, attr = target.partition(":")
        obj: Any = getattr(importlib.import_module(module_name), attr)
        backend = obj() if callable(obj) and not hasattr(obj, "create") else obj
    except Exception as exc:
        raise BackendLoadError(f"{type(exc).__name__}: {exc}") from exc
    if not hasattr(backend, "create") or not hasattr(backend, "capabilities"):
        raise NotABackend(f"{target} is not a backend (needs name, capabilities, version(), create())")
    return backend


def resolve(name: str) -> Backend:
    """A backend object in this process (for timing and tests; the matrix isolates backends)."""
    check_name(split_alias(name)[1])
    return load(split_alias(name)[1])


def unavailable_reason(backend: Backend) -> Optional[str]:
    """Why a backend cannot run here (None if it can): optional `available()` on the backend."""
    check = getattr(backend, "available", None)
    return check() if callable(check) else None


def default_backends() -> list[str]:
    """Built-ins that can run here: torch-cuda only where torch is installed and an NVIDIA device
    is (read from the driver, without importing torch: the run's controller never needs torch).
    Without torch the torch column stays, to read skipped with the reason."""
    names = ["torch", "numpy", "cffi"]
    if torch_installed() and _nvidia_device():
        names.insert(1, "torch-cuda")
    return names


def _nvidia_device() -> bool:
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False
