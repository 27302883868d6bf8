"""Adapters for real, independently written BatchNorm implementations (optional packages).

Each is skipped, with the reason, when its package is missing; each declares its conventions
from its framework's own documentation and source, cited in its docstring.
"""

from pathlib import Path
from typing import Any, Callable, Optional

MANIFESTS = Path(__file__).parent / "manifests"


class FrameworkBackend:
    """What every adapter shares: its shipped manifest, and an import probe as skip reason.

    Subclasses set `name` (also the manifest's file name), `conventions`, `capabilities`,
    `install_hint`, and `probe` (imports the framework, raising when it cannot).
    """

    name: str
    install_hint: str
    probe: Callable[[], Any]

    @property
    def manifest(self) -> str:
        """What bnconform found beyond the declared conventions, each entry with its evidence."""
        return str(MANIFESTS / f"{self.name}.yaml")

    def available(self) -> Optional[str]:
        try:
            type(self).probe()
        except Exception as exc:
            return f"{self.name} is not importable ({type(exc).__name__}: {exc}); {self.install_hint}"
        return None


class FrameworkModule:
    """What the module side of every adapter shares: the train/eval flag, read at call time, and
    the protocol's methods for what these frameworks do not have (their capabilities do not
    declare them, so no case calls them; a call says so)."""

    training = True

    def train(self) -> None:
        self.training = True

    def eval(self) -> None:
        self.training = False

    def _undeclared(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} has no {what} (the capability is not declared)")

    def state_dict(self) -> dict:
        raise self._undeclared("state_dict")

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        raise self._undeclared("load_state_dict")

    def reset_running_stats(self) -> None:
        raise self._undeclared("reset_running_stats")

    def reset_parameters(self) -> None:
        raise self._undeclared("reset_parameters")

    def set_requires_grad(self, name: str, flag: bool) -> None:
        raise self._undeclared("set_requires_grad")
