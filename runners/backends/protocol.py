"""The backend protocol: what bnconform needs from a BatchNorm implementation.

It mirrors `nn.BatchNorm{1,2,3}d` so that any implementation can be driven step by step.
Arrays cross the boundary as NumPy arrays of the case dtype; an absent parameter or buffer
is None. `docs/backends.md` is the guide for authors; keep the two in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from bnconform.cases.schema import ModuleConfig

__all__ = [
    "PROFILES",
    "Array",
    "Backend",
    "BackendUnavailable",
    "BatchNormModule",
    "Capabilities",
    "Conventions",
    "ModuleConfig",
]

Array = np.ndarray


class BackendUnavailable(Exception):
    """Raised by a backend that cannot run on this machine (its reason becomes the skip reason)."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run. A case needing anything else is skipped, naming what is missing."""

    dims: frozenset[int] = frozenset({1, 2, 3})
    dtypes: frozenset[str] = frozenset({"float32", "float64"})
    features: frozenset[str] = field(default_factory=frozenset)
    # Why a feature is missing (feature -> reason), appended to the skip message of its cells.
    reasons: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def provides(self) -> set[str]:
        return {f"dim={d}" for d in self.dims} | {f"dtype={t}" for t in self.dtypes} | set(self.features)


@dataclass(frozen=True)
class Conventions:
    """How a backend's BatchNorm differs by design from PyTorch's (its profile).

    The runner drives a backend in its own conventions (a decay-convention backend gets 1 - m)
    and, where its declared behaviour differs from torch's, compares it with the oracle under
    the matching deviation switches: such a cell reads "deviates (declared)", never "passed".
    """

    momentum: str = "torch"  # "torch": weight of the new batch; "decay": weight of the old value
    running_var: str = "unbiased"  # or "biased"
    default_eps: float = 1e-5  # the framework's default (the runner always passes eps explicitly)
    one_value_raises: bool = True  # one value per channel raises (torch: ValueError)
    toggling: str = "current"  # "current" (PyTorch >= 1.6) or "legacy" (1.1-1.5 flag semantics)
    counter: bool = True  # keeps num_batches_tracked
    # "torch": error messages match torch's; "own": the exception types are torch's, the words
    # the backend's own (a right type with other words then reads deviates (declared)).
    messages: str = "torch"

    def problems(self) -> list[str]:
        """What is wrong with these declarations (the run refuses a backend that has any)."""
        allowed = {"momentum": ("torch", "decay"), "running_var": ("unbiased", "biased"),
                   "toggling": ("current", "legacy"), "messages": ("torch", "own")}
        out = [f"conventions.{key} must be one of {', '.join(map(repr, values))}, got {getattr(self, key)!r}"
               for key, values in allowed.items() if getattr(self, key) not in values]
        out += [f"conventions.{key} must be True or False, got {getattr(self, key)!r}"
                for key in ("one_value_raises", "counter") if not isinstance(getattr(self, key), bool)]
        eps = self.default_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            out.append(f"conventions.default_eps must be a positive number, got {eps!r}")
        return out

    def deviations(self) -> frozenset[str]:
        """The oracle switches (cases/deviations.py) that describe this profile."""
        out = set()
        if self.running_var == "biased":
            out.add("biased_running_var")
        if not self.one_value_raises:
            out.add("no_batch_size_check")
        if self.toggling == "legacy":
            out.add("legacy_toggling")
        if not self.counter:
            out.add("no_counter")
        return frozenset(out)

    def describe(self) -> str:
        return (f"momentum={self.momentum} (weight of the {'new batch' if self.momentum == 'torch' else 'old value'}), "
                f"running_var={self.running_var}, default eps={self.default_eps:g}, "
                f"one value per channel {'raises' if self.one_value_raises else 'accepted'}, toggling={self.toggling}, "
                f"num_batches_tracked {'kept' if self.counter else 'absent'}"
                + (", own error messages" if self.messages == "own" else ""))


PROFILES = {
    "torch": Conventions(),
    # PyTorch 1.1-1.5: the module passed `training or not track_running_stats` to F.batch_norm, so a
    # True->False flip still updated the buffers in training and made eval use (and update) batch
    # statistics (pytorch issues 20967, 37823; fixed by PR 38084).
    "torch-legacy": Conventions(toggling="legacy"),
}


@runtime_checkable
class BatchNormModule(Protocol):
    """One module instance, built from a ModuleConfig (already in training mode)."""

    def train(self) -> None: ...
    def eval(self) -> None: ...
    def set_attribute(self, name: str, value: object) -> None:
        """Assign `track_running_stats` or `momentum` (in the config's convention)."""
    def forward(self, x: Array) -> Array: ...
    def backward(self, grad_output: Array) -> dict[str, Optional[Array]]:
        """Grads of the last forward's output: keys input, weight, bias (None where absent
        or requires_grad is off). Grads of this call only; no accumulation."""
    def get(self, name: str) -> Optional[Array | int]:
        """weight, bias, running_mean, running_var (arrays) or num_batches_tracked (int); None if absent."""
    def assign(self, name: str, value: Array | int) -> None:
        """Overwrite a parameter or buffer in place (spec `init`)."""
    def state_dict(self) -> dict[str, Array]:
        """Names that are not None, in nn.BatchNorm's order; num_batches_tracked as an int64 0-d array."""
    def load_state_dict(self, state: dict[str, Array], strict: bool = True) -> None: ...
    def reset_running_stats(self) -> None: ...
    def reset_parameters(self) -> None: ...
    def set_requires_grad(self, name: str, flag: bool) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def version(self) -> str:
        """Version of what is under test (package version, build id...)."""

    def create(self, config: ModuleConfig) -> BatchNormModule:
        """A fresh module; raise BackendUnavailable if this machine cannot run it."""
